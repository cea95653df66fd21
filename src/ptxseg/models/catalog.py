"""The registry's names, kinds and input-size rules as plain data, importable without torch.

The Snakefile validates the config against this at DAG build, which must stay fast; importing the
registry itself would load torch, timm and smp first. tests/unit/test_models.py checks that this
table and the registry agree.
"""

from __future__ import annotations

# name: (kind, min_size, size_multiple)
CATALOG: dict[str, tuple[str, int, int]] = {
    "inceptionresnetv2": ("classifier", 75, 1),
    "xception": ("classifier", 7, 1),
    "densenet169": ("classifier", 29, 1),
    "efficientnet_b4": ("classifier", 1, 1),
    "unet_resnet34": ("segmenter", 32, 32),
    "unet_efficientnet_b4": ("segmenter", 32, 32),
    "attention_unet": ("segmenter", 32, 32),
    "scaled_unet": ("segmenter", 32, 32),
    "scaled_unet_b1": ("segmenter", 32, 32),
    "scaled_unet_b2": ("segmenter", 32, 32),
}


def names(kind: str | None = None) -> list[str]:
    return sorted(n for n, (k, _, _) in CATALOG.items() if kind is None or k == kind)
