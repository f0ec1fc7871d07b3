"""The model bank: width spaces, slimmable layers, the bank with its heads, BatchNorm recalibration, costs."""
