"""A fold model with its TTA as one module: what the PyTorch backend runs and what is exported.

The flips, the scale resizes (bilinear), the sigmoid, the maps resized and flipped back and the
average over the passes are inside the module (`ptxseg.runtime.predict.tta_outputs`, the test
set's own TTA), so an exported graph carries them and the ONNX path needs no resizing of its own,
while each graph keeps one fixed input size. Besides the averages, the module returns every pass's
image-level probability, from which `Prediction.uncertainty` is computed.

The PyTorch backend runs the passes one by one, as the test set's prediction does, so its maps are
those of the per-image path bit for bit; the export stacks each scale's flips in one batch
(``stack_flips``), so a graph holds the model once per scale, not once per pass.
"""

from __future__ import annotations

import torch

from ptxseg.runtime.predict import model_passes, tta_outputs


class TTAModule(torch.nn.Module):
    """(B, 1, S, S) scaled images -> a classifier's (probabilities (B, K), per pass (B, P, K)), a
    segmenter's (maps (B, S, S),) or, with a head, (maps, head (B,), head per pass (B, P))."""

    def __init__(
        self, model: torch.nn.Module, passes: list[tuple[str, float]], stack_flips: bool = False
    ) -> None:
        super().__init__()
        self.model = model
        self.passes = model_passes(model, passes)  # those its training covered
        self.stack_flips = stack_flips

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        total, head_total, per_pass, head_passes = None, None, [], []
        for probabilities, head in tta_outputs(
            self.model, images, self.passes, stack_flips=self.stack_flips
        ):
            total = probabilities if total is None else total + probabilities
            if probabilities.ndim == 2:  # a classifier's (B, K)
                per_pass.append(probabilities)
            if head is not None:
                head_total = head if head_total is None else head_total + head
                head_passes.append(head)
        mean = total / len(self.passes)
        if per_pass:
            return mean, torch.stack(per_pass, dim=1)
        if head_total is None:
            return (mean,)
        return mean, head_total / len(self.passes), torch.stack(head_passes, dim=1)
