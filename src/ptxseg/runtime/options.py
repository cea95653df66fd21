"""How a job runs, whatever the model: device, loader workers, precision, memory layout, TTA."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ptxseg.runtime.predict import predict_batches


@dataclass(frozen=True)
class Runtime:
    """How training runs, whatever the model (config section ``train``)."""

    device: str = "auto"
    num_workers: int = 0
    amp: bool = True
    channels_last: bool = True
    tta: tuple[str, ...] = ("none", "hflip")
    threads: int = 1

    @classmethod
    def from_config(cls, train: dict, threads: int) -> Runtime:
        """From the config's ``train`` section and the job's thread count."""
        return cls(
            device=train["device"],
            num_workers=train["num_workers"],
            amp=train["amp"],
            channels_last=train["channels_last"],
            tta=tuple(train["tta"]),
            threads=threads,
        )

    def predict_batches(self, model, dataset, device: torch.device, batch_size: int):
        """``predict_batches`` with this runtime's TTA, loader workers, precision and layout."""
        return predict_batches(
            model,
            dataset,
            device,
            batch_size,
            self.tta,
            self.num_workers,
            self.amp,
            self.channels_last,
        )
