"""How a job runs, whatever the model: device, loader workers, threads, checkpoint interval, and the
numerics that change what it computes (precision, memory layout, TTA)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ptxseg.runtime.predict import predict_batches


@dataclass(frozen=True)
class Runtime:
    """Built once per job from the config's ``runtime`` section (how it runs: never a reason to
    rerun) and its ``train`` section (numerics: a rule parameter)."""

    device: str = "auto"
    num_workers: int = 0
    threads: int = 1
    # The resume state is written after an epoch once this many seconds have passed since the
    # last write (0: after every epoch). Short epochs then do not spend their time on writes.
    checkpoint_every_s: float = 0.0
    amp: bool = True
    channels_last: bool = True
    tta: tuple[str, ...] = ("none", "hflip")

    @classmethod
    def from_config(cls, runtime: dict, train: dict, threads: int) -> Runtime:
        """From the config's ``runtime`` and ``train`` sections and the job's thread count. A
        training job's ``train`` has no ``tta`` (an inference choice, not its parameter): its
        runtime has no TTA pass, and a prediction with it fails rather than guess one."""
        return cls(
            device=runtime["device"],
            num_workers=runtime["num_workers"],
            threads=threads,
            checkpoint_every_s=float(runtime["checkpoint_every_s"]),
            amp=train["amp"],
            channels_last=train["channels_last"],
            tta=tuple(train.get("tta", ())),
        )

    def numerics(self) -> dict:
        """What a resumed training must share with the interrupted one; the rest may change (TTA
        too: a training predicts nothing with it, its OOF predictions are written apart)."""
        return {"amp": self.amp, "channels_last": self.channels_last}

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
