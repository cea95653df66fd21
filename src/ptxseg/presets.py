"""Named recipes a config can ask for (``recipe: {preset: efficientnet}``), its own keys on top.

'efficientnet' is the training process of the EfficientNet paper (Tan and Le 2019, section 5.2, and
the official TPU implementation), adapted to segmenting 12,047 radiographs instead of classifying
1.28 million photographs:

- RMSProp in TensorFlow's form, decay 0.9, momentum 0.9, epsilon 0.001; weight decay 1e-5;
- the learning rate scaled with the batch as the paper's code does: 0.016 per 256 images (0.256 at
  its batch of 4096), so 0.001 at a batch of 16;
- a linear warm-up (the official code: 5 epochs of 350; here a seventieth of the epochs, at least 1);
- the rate times 0.97 every 2.4 epochs, stepped per batch. On ImageNet that is 146 steps of decay
  over 350 epochs, ending at 1.2 % of the peak. A segmenter trains for tens of epochs, so the step
  is compressed with the run: every 2.4 x epochs / 350 epochs (0.27 epochs of 40), ending at the
  same 1.2 %. (At the paper's own 2.4 epochs, 40 epochs would end at 64 % of the peak rate.)
- BatchNorm momentum 0.99 (TensorFlow's convention);
- an exponential moving average of the weights, decay 0.9999 with the official decay warm-up;
- stochastic depth at rate 0.2 (survival 0.8) and dropout 0.2 before the head (B0's values; the
  compound-scaling search grows both with phi);
- SiLU (Swish-1) activations, in the architectures that let the recipe choose them (the
  compound-scaled U-Nets, the hand-written U-Net decoders).

Plain dictionaries: the config check expands presets before it fills defaults.
"""

from __future__ import annotations

from ptxseg.recipes import deep_merge

PAPER_EPOCHS = 350
PAPER_DECAY_EPOCHS = 2.4
PAPER_WARMUP_EPOCHS = 5
LR_PER_256_IMAGES = 0.016


def efficientnet(epochs: int, batch_size: int) -> dict:
    """The EfficientNet recipe for a run of ``epochs`` at ``batch_size`` (see the module text)."""
    return {
        "optimiser": {
            "name": "rmsprop_tf",
            "lr": LR_PER_256_IMAGES * batch_size / 256,
            "weight_decay": 1e-5,
            "rmsprop": {"decay": 0.9, "momentum": 0.9, "eps": 0.001},
        },
        "schedule": {
            "name": "exponential",
            "warmup_epochs": max(1, round(epochs * PAPER_WARMUP_EPOCHS / PAPER_EPOCHS)),
            "decay_factor": 0.97,
            "decay_epochs": round(PAPER_DECAY_EPOCHS * epochs / PAPER_EPOCHS, 4),
        },
        "bn_momentum": 0.99,
        "ema": {"enabled": True, "decay": 0.9999, "warmup": True},
        "drop_path_rate": 0.2,
        "dropout_rate": 0.2,
        "activation": "silu",
    }


PRESETS = {"efficientnet": efficientnet}


def expand(recipe: dict, defaults: dict) -> dict:
    """``recipe`` with its preset's keys filled in beneath its own (nested mappings merged).

    ``defaults`` gives epochs and batch_size where the recipe does not (the schema's defaults).
    """
    name = recipe.get("preset")
    if name is None:
        return recipe
    if name not in PRESETS:
        raise ValueError(f"unknown recipe preset {name!r} (presets: {', '.join(PRESETS)})")
    epochs = recipe.get("epochs", defaults["epochs"])
    batch_size = recipe.get("batch_size", defaults["batch_size"])
    return deep_merge(PRESETS[name](epochs, batch_size), recipe)
