"""Named recipes a config can ask for (``recipe: {preset: efficientnet}``), its own keys on top.

'efficientnet' is the training process of the EfficientNet paper (Tan and Le 2019, section 5.2, and
the official TPU implementation, tensorflow/tpu models/official/efficientnet: main.py, utils.py,
efficientnet_builder.py), adapted to segmenting 12,047 radiographs instead of classifying
1.28 million photographs. Each constant is a recipe key (README, "The EfficientNet recipe", has
the table of values and sources):

- RMSProp in TensorFlow's form, decay 0.9, momentum 0.9, epsilon 0.001; weight decay 1e-5, not on
  BatchNorm's parameters (the official code leaves the batch-normalisation variables out of its L2
  term; here biases too: every one-dimensional parameter);
- the learning rate scaled with the effective batch as the official code does: 0.016 per 256
  images (the paper's 0.256 at its batch of 4096), so 0.001 at a batch of 16. It is a rule
  (``optimiser.lr_per_256``), resolved where the batch is final: after an architecture's
  overrides, for each progressive stage's own batch, times ``accumulate``
  (`ptxseg.train.settings.FitSettings`);
- no gradient clipping (the official code clips none);
- a linear warm-up from 0 over 5 epochs, then the rate times 0.97 every 2.4 epochs, stepped
  (staircase) and counted from step 0, warm-up included (utils.build_learning_rate). The
  official run is 350 epochs long; a segmenter trains for tens of epochs, so both are written for
  350 epochs (``schedule.reference_epochs``) and each run or stage scales them to its own epochs:
  146 steps of decay over any run, ending at the same 1.2 % of the peak. (At the paper's own 2.4
  epochs, 40 epochs would end at 64 % of the peak rate.)
- BatchNorm momentum 0.99 (TensorFlow's convention);
- an exponential moving average of the weights, decay 0.9999 with the official decay warm-up;
- stochastic depth (drop connect) at rate 0.2, survival 0.8, and dropout 0.2 before the head
  (B0's values; the compound-scaling search keeps drop path at 0.2 at every phi and grows dropout
  as the official B0-B7 do, ``scaling.dropout_by_phi``);
- SiLU (Swish-1) activations, in the architectures that let the recipe choose them (the
  compound-scaled U-Nets, the hand-written U-Net decoders).

Plain dictionaries: the config check expands presets before it fills defaults.
"""

from __future__ import annotations

from ptxseg.recipes import merge_recipe

PAPER_EPOCHS = 350  # the official ImageNet run
PAPER_DECAY_EPOCHS = 2.4
PAPER_WARMUP_EPOCHS = 5
LR_PER_256_IMAGES = 0.016  # main.py's base_learning_rate; x 4096 / 256 = the paper's 0.256


def batch_lr(lr_per_256: float, batch_size: int, accumulate: int = 1) -> float:
    """The peak rate for an effective batch of ``batch_size`` x ``accumulate`` images: the official
    code's base_learning_rate x train_batch_size / 256."""
    return lr_per_256 * batch_size * accumulate / 256


EFFICIENTNET = {
    "optimiser": {
        "name": "rmsprop_tf",
        "lr_per_256": LR_PER_256_IMAGES,
        "weight_decay": 1e-5,
        "decay_norm_and_bias": False,
        "rmsprop": {"decay": 0.9, "momentum": 0.9, "eps": 0.001},
    },
    "grad_clip": None,
    "schedule": {
        "name": "exponential",
        "warmup_epochs": PAPER_WARMUP_EPOCHS,
        "warmup_from": 0.0,
        "decay_factor": 0.97,
        "decay_epochs": PAPER_DECAY_EPOCHS,
        "staircase": True,
        "reference_epochs": PAPER_EPOCHS,
    },
    "bn_momentum": 0.99,
    "ema": {"enabled": True, "decay": 0.9999, "warmup": True},
    "drop_path_rate": 0.2,
    "dropout_rate": 0.2,
    "activation": "silu",
}

PRESETS = {"efficientnet": EFFICIENTNET}


def expand(recipe: dict) -> dict:
    """``recipe`` with its preset's keys filled in beneath its own (nested mappings merged). The
    preset's values are constants, its rate a rule of the batch, so it is the same wherever it
    expands; an architecture's or a stage's batch reaches the rate when the settings are built."""
    name = recipe.get("preset")
    if name is None:
        return recipe
    if name not in PRESETS:
        raise ValueError(f"unknown recipe preset {name!r} (presets: {', '.join(PRESETS)})")
    return merge_recipe(PRESETS[name], recipe)
