"""ptxseg: a reproducible classification + segmentation cascade for pneumothorax on chest X-rays."""

__version__ = "0.1.0"
