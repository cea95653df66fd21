"""One training run's settings: its recipe, seed and runtime as one typed object.

Built once from the config (``FitSettings.from_config``): the loop, the tasks and the fit jobs read
its fields, so no config key is mapped by hand anywhere else, and a key that is not here does not
reach training.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from ptxseg.presets import batch_lr
from ptxseg.recipes import member_names
from ptxseg.runtime.options import Runtime
from ptxseg.train.schedules import RmspropSpec, ScheduleSpec


@dataclass(frozen=True)
class StageSpec:
    """One stage of progressive resizing: its size and what differs from the recipe there."""

    size: int
    epochs: int
    batch_size: int | None = None
    lr: float | None = None
    freeze_encoder_epochs: int = 0
    crop: dict | None = None

    @classmethod
    def from_config(cls, stage: dict) -> StageSpec:
        return cls(
            size=stage["size"],
            epochs=stage["epochs"],
            batch_size=stage.get("batch_size"),
            lr=stage.get("lr"),
            freeze_encoder_epochs=stage.get("freeze_encoder_epochs", 0),
            crop=_crop(stage.get("crop")),
        )


@dataclass(frozen=True)
class MeanTeacherSpec:
    """The mean-teacher second round: consistency with an EMA teacher on unlabelled images."""

    consistency_weight: float = 1.0
    rampup_epochs: int = 5
    ema_decay: float = 0.99
    noise_std: float = 0.1


def _crop(crop: dict | None) -> dict | None:
    """The crop where one is asked for (a size), else None."""
    return dict(crop) if crop and crop.get("size") else None


@dataclass(frozen=True)
class FitSettings:
    epochs: int
    batch_size: int
    lr: float
    optimiser: str = "adamw"
    weight_decay: float = 1e-4
    decay_norm_and_bias: bool = True  # False: no weight decay on 1-D parameters (BatchNorm, biases)
    # The peak rate per 256 images of effective batch (batch_size x accumulate), applied in each
    # stage to its own batch (`ptxseg.presets.batch_lr`); None: ``lr`` as given.
    lr_per_256: float | None = None
    rmsprop: RmspropSpec = field(default_factory=RmspropSpec)  # rmsprop_tf's constants
    schedule: ScheduleSpec = field(default_factory=ScheduleSpec)
    snapshots: int = 0
    swa_start: int | None = None  # 0-based epoch from which SWA averages; None: no SWA
    swa_lr: float | None = None
    ema_decay: float | None = None  # the weights' EMA decay per optimiser step; None: no EMA
    ema_warmup: bool = True  # the official decay warm-up, min(decay, (1 + n) / (10 + n))
    grad_clip: float | None = None
    accumulate: int = 1
    steps_per_epoch: int | None = None  # at most this many batches an epoch; None: all
    sampling: str = "all"
    sampling_start: float = 0.8
    sampling_end: float = 0.4
    # 'run': a progressive run's stages share one slide of the positive share (stage_plan sets each
    # stage's place in it); 'stage': each stage slides from start to end over its own epochs.
    sampling_span: str = "run"
    sampling_offset: int = 0  # epochs of the slide before this run (earlier stages)
    sampling_epochs: int | None = None  # epochs of the whole slide; None: this run's
    monitor: str = "loss"
    monitor_mode: str = "min"
    # The model's regularisation (applied when the model is built): stochastic depth, dropout
    # before the head, BatchNorm momentum in TensorFlow's convention; None: the model's own.
    drop_path_rate: float | None = None
    dropout_rate: float | None = None
    bn_momentum: float | None = None
    activation: str | None = None  # where the architecture lets it be chosen; None: its own
    loss: dict = field(default_factory=lambda: {"name": "bce"})
    # Segmenters: the classification head's weight beside the pixel loss (None: no head), the
    # epochs trained with the encoder frozen, the training crop, and progressive-resizing stages.
    head_weight: float | None = None
    freeze_encoder_epochs: int = 0
    crop: dict | None = None
    stages: tuple[StageSpec, ...] = ()
    augment: dict | None = None
    # The NIH second round: the pseudo-labelled images' share of each batch, or a mean teacher.
    pseudo_share: float = 0.0
    mean_teacher: MeanTeacherSpec | None = None
    seed: int = 0
    runtime: Runtime = field(default_factory=Runtime)

    @classmethod
    def from_config(cls, recipe: dict, seed: int, runtime: Runtime) -> FitSettings:
        """From a validated recipe (a stage's, with an architecture's overrides), the config's seed
        and the job's runtime."""
        schedule, swa, sampling = recipe["schedule"], recipe["swa"], recipe["sampling"]
        rmsprop, ema = recipe["optimiser"]["rmsprop"], recipe["ema"]
        optimiser = recipe["optimiser"]
        per_256 = optimiser["lr_per_256"]
        return cls(
            epochs=recipe["epochs"],
            batch_size=recipe["batch_size"],
            lr=(
                optimiser["lr"]
                if per_256 is None
                else batch_lr(per_256, recipe["batch_size"], recipe["accumulate"])
            ),
            lr_per_256=per_256,
            optimiser=optimiser["name"],
            weight_decay=optimiser["weight_decay"],
            decay_norm_and_bias=optimiser["decay_norm_and_bias"],
            rmsprop=RmspropSpec(
                decay=rmsprop["decay"], momentum=rmsprop["momentum"], eps=rmsprop["eps"]
            ),
            schedule=ScheduleSpec(
                name=schedule["name"],
                warmup_epochs=schedule["warmup_epochs"],
                cycle_epochs=schedule["cycle_epochs"],
                cycle_mult=schedule["cycle_mult"],
                min_lr=schedule["min_lr"],
                plateau_patience=schedule["plateau_patience"],
                plateau_factor=schedule["plateau_factor"],
                decay_factor=schedule["decay_factor"],
                decay_epochs=schedule["decay_epochs"],
                mode=recipe["monitor_mode"],
                staircase=schedule["staircase"],
                warmup_from=schedule["warmup_from"],
                reference_epochs=schedule["reference_epochs"],
            ),
            snapshots=recipe["snapshots"],
            swa_start=swa["start_epoch"] - 1 if swa["enabled"] else None,
            swa_lr=swa["lr"],
            ema_decay=ema["decay"] if ema["enabled"] else None,
            ema_warmup=ema["warmup"],
            grad_clip=recipe["grad_clip"],
            accumulate=recipe["accumulate"],
            steps_per_epoch=recipe["steps_per_epoch"],
            sampling=sampling["mode"],
            sampling_start=sampling["start"],
            sampling_end=sampling["end"],
            sampling_span=sampling["span"],
            monitor=recipe["monitor"],
            monitor_mode=recipe["monitor_mode"],
            drop_path_rate=recipe["drop_path_rate"],
            dropout_rate=recipe["dropout_rate"],
            bn_momentum=recipe["bn_momentum"],
            activation=recipe["activation"],
            loss=recipe["loss"],
            head_weight=recipe["head"]["weight"] if recipe["head"]["enabled"] else None,
            freeze_encoder_epochs=recipe["freeze_encoder_epochs"],
            crop=_crop(recipe["crop"]),
            stages=tuple(StageSpec.from_config(stage) for stage in recipe["stages"]),
            augment=recipe.get("augment"),
            seed=seed,
            runtime=runtime,
        )

    def for_round2(self, pseudo_labels: dict) -> FitSettings:
        """The second round's settings from the config's ``pseudo_labels`` section: a mean
        teacher where it is switched on, else pseudo-labels at ``batch_share`` of each batch."""
        teacher = pseudo_labels["mean_teacher"]
        if teacher["enabled"]:
            spec = MeanTeacherSpec(
                consistency_weight=teacher["consistency_weight"],
                rampup_epochs=teacher["rampup_epochs"],
                ema_decay=teacher["ema_decay"],
                noise_std=teacher["noise_std"],
            )
            return replace(self, mean_teacher=spec, pseudo_share=0.0)
        return replace(self, pseudo_share=pseudo_labels["batch_share"], mean_teacher=None)

    def one_model(self) -> FitSettings:
        """The same run keeping only its best model (no snapshots, no SWA, no EMA)."""
        return replace(self, snapshots=0, swa_start=None, ema_decay=None)

    @property
    def members(self) -> list[str]:
        """The models this run keeps: best, then SWA, EMA and snapshots where the recipe asks."""
        return member_names(
            {
                "swa": {"enabled": self.swa_start is not None},
                "ema": {"enabled": self.ema_decay is not None},
                "snapshots": self.snapshots,
            }
        )

    def stage_plan(self, size: int) -> list[tuple[int, FitSettings]]:
        """(size, settings) of each stage in order: the recipe itself at ``size`` without stages;
        with stages, each stage's overrides, and only the last keeps members (SWA, EMA,
        snapshots), so every stage before it hands its best model on. A stage's peak rate is its
        own ``lr``, else the recipe's rule for its batch (``lr_per_256``), else the recipe's; its
        schedule runs over its own epochs; the positive share slides once over all the stages'
        epochs (``sampling_span`` 'run') or over each stage's."""
        if not self.stages:
            return [(size, self)]
        if self.stages[-1].size != size:
            raise ValueError(
                f"recipe.stages: the last stage's size {self.stages[-1].size} must be the "
                f"stage's size {size} (the size of the OOF and test maps)"
            )
        plan, before = [], 0
        total = sum(stage.epochs for stage in self.stages)
        whole_run = self.sampling_span == "run"
        for k, stage in enumerate(self.stages):
            batch_size = stage.batch_size or self.batch_size
            by_batch = (
                batch_lr(self.lr_per_256, batch_size, self.accumulate)
                if self.lr_per_256 is not None
                else self.lr
            )
            settings = replace(
                self,
                stages=(),
                epochs=stage.epochs,
                batch_size=batch_size,
                lr=stage.lr or by_batch,
                freeze_encoder_epochs=stage.freeze_encoder_epochs,
                crop=stage.crop,
                sampling_offset=before if whole_run else 0,
                sampling_epochs=total if whole_run else None,
            )
            plan.append(
                (stage.size, settings if k == len(self.stages) - 1 else settings.one_model())
            )
            before += stage.epochs
        return plan

    def model_options(self, drop_path: bool = True, activation: bool = False) -> dict:
        """The options ``build_model`` takes from the recipe: the regularisation where it is set
        (the drop path rate only for an architecture with stochastic depth, ``drop_path``), the
        activation for an architecture that lets it be chosen (``activation``) and the
        classification head where the recipe trains one."""
        options: dict[str, Any] = {
            "drop_path_rate": self.drop_path_rate if drop_path else None,
            "dropout_rate": self.dropout_rate,
            "activation": self.activation if activation else None,
            "classification_head": True if self.head_weight is not None else None,
        }
        return {key: value for key, value in options.items() if value is not None}

    @property
    def eval_batch_size(self) -> int:
        """Evaluation holds no gradients: twice the training batch fits."""
        return self.batch_size * 2

    def fingerprint(self) -> dict:
        """What a resumed run must share with the interrupted one: everything but how it runs."""
        values = asdict(self)
        values["runtime"] = self.runtime.numerics()
        return values
