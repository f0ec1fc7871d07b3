"""slimda: slimmable domain adaptation for edge deployment.

One training run adapts a weight-sharing bank of widths to an unlabelled target domain; each device then
gets the sub-network that fits its latency budget. Importing this package does no work: import the
modules you need (``slimda.model.bank``, ``slimda.data.domains``, ...).
"""

__version__ = "0.1.0"
