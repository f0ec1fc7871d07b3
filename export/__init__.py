"""Export of extracted sub-networks: ONNX, checks and runtime formats (installed as ``slimda.export``)."""
