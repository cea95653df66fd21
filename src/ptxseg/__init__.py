"""ptxseg: a reproducible classification + segmentation cascade for pneumothorax on chest X-rays.

``ptxseg.Predictor`` (and ``ptxseg.Prediction``) load on first use (PEP 562), so ``import ptxseg``
stays light and imports no torch.
"""

__version__ = "0.1.0"

_LAZY = {"Predictor", "Prediction"}


def __getattr__(name: str):
    if name in _LAZY:
        from ptxseg import deploy

        return getattr(deploy, name)
    raise AttributeError(f"module 'ptxseg' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
