"""What a model returns: mask logits, or (mask logits, image logits) for a segmenter with a head.

A segmenter built with ``classification_head=True`` returns a tuple, as smp's models with an
auxiliary head do; every consumer (losses, evaluation, prediction) splits it here, so the tuple
convention lives in one place.
"""

from __future__ import annotations

import torch

Output = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


def split_logits(output: Output) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(the main logits, the image-level logits (B, 1) or None)."""
    if isinstance(output, tuple | list):
        if len(output) != 2:
            raise ValueError(f"a model output tuple has 2 parts (mask, image), got {len(output)}")
        return output[0], output[1]
    return output, None


def as_float(output: Output) -> Output:
    """The output in float32 (autocast gives bf16), tuple or not."""
    mask, image = split_logits(output)
    return mask.float() if image is None else (mask.float(), image.float())
