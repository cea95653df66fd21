"""The models learn: through the project's own training path (`fit`, `FitSettings`, the tasks'
losses and metrics, `RepackedImages`), a small segmenter overfits 16 demo chests and a classifier
separates them. Scored on the training images themselves: overfitting is the point, so that a
regression anywhere in the loop, the loss, the optimiser, the schedule or the data path (images,
masks, labels, scaling) fails here, in the unit suite, rather than as a silently flat OOF score.

Seeded and on one CPU thread; each test takes about 15 s there.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from ptxseg.data.datasets import RepackedImages
from ptxseg.data.phantom import render_chest
from ptxseg.models import build_model
from ptxseg.runtime.options import Runtime
from ptxseg.train.loop import Members, fit
from ptxseg.train.schedules import ScheduleSpec
from ptxseg.train.settings import FitSettings
from ptxseg.train.tasks import classification_task, segmentation_task

SIZE, N_IMAGES, SEED = 64, 16, 7
CPU = torch.device("cpu")
RUNTIME = Runtime(amp=False, channels_last=False, threads=1)


@pytest.fixture(scope="module")
def chests(tmp_path_factory) -> dict:
    """16 demo chests rendered at 64 px, every other one with a pneumothorax, as PNGs and masks."""
    root = tmp_path_factory.mktemp("chests")
    ids, images, masks, positive = [], [], [], []
    for k in range(N_IMAGES):
        chest = render_chest(np.random.default_rng([SEED, k]), SIZE, pneumothorax_regions=k % 2)
        mask = np.zeros((SIZE, SIZE), np.uint8)
        for region in chest.pneumothorax:
            mask[region] = 255
        cv2.imwrite(str(root / f"{k}.png"), chest.image)
        cv2.imwrite(str(root / f"{k}_mask.png"), mask)
        ids.append(str(k))
        images.append(root / f"{k}.png")
        masks.append(root / f"{k}_mask.png")
        positive.append(mask.any())
    pixels = np.stack([cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in images]) / 255.0
    return {
        "root": root,
        "ids": ids,
        "images": images,
        "masks": masks,
        "positive": np.array(positive),
        "mean": float(pixels.mean()),
        "std": float(pixels.std()),
    }


def _overfit(chests, arch: str, task, epochs: int, lr: float, loss: dict, **targets):
    """``arch`` trained by `fit` on the chests (with ``targets``: masks or labels) and scored on
    them; the task's scores before training and the run's metrics table."""
    images = RepackedImages(
        chests["ids"], chests["images"], mean=chests["mean"], std=chests["std"], **targets
    )
    torch.manual_seed(SEED)
    model = build_model(arch)
    before = task.evaluate(model, images)
    settings = FitSettings(
        epochs=epochs,
        batch_size=4,
        lr=lr,
        schedule=ScheduleSpec("cosine_restarts", cycle_epochs=epochs),  # one cosine decay
        loss=loss,
        seed=SEED,
        runtime=RUNTIME,
    )
    members = Members(best=chests["root"] / arch / "best.pt")
    # Validated on the images it trains on: overfitting is what is measured.
    history = fit(model, images, images, task, settings, members, {"arch": arch}, CPU)
    return before, history


def test_a_small_segmenter_overfits_sixteen_demo_chests_to_dice_0_8(chests):
    assert chests["positive"].sum() == N_IMAGES // 2
    loss = {"name": "bce_dice"}
    task = segmentation_task(loss, 4, CPU, chests["positive"], amp=False, channels_last=False)
    # B0 of the compound-scaled U-Net, from scratch: the smallest of the project's segmenters.
    before, history = _overfit(chests, "scaled_unet", task, 40, 0.01, loss, masks=chests["masks"])
    last, summary = history.iloc[-1], history[["epoch", "train_loss", "val_loss", "dice"]]
    assert before["dice"] < 0.2  # an untrained map is no mask
    assert last["dice"] >= 0.8, summary.to_string()
    assert last["competition"] >= 0.8, summary.to_string()
    assert last["val_loss"] < 0.5 * history["val_loss"].iloc[0], summary.to_string()


def test_a_classifier_separates_sixteen_demo_chests_to_auc_0_9(chests):
    loss = {"name": "bce"}
    task = classification_task(loss, 4, CPU, amp=False, channels_last=False)
    labels = chests["positive"].astype(np.float32)
    # DenseNet-169: the smallest of the project's classifiers (14 M parameters).
    before, history = _overfit(chests, "densenet169", task, 8, 0.001, loss, labels=labels)
    last = history.iloc[-1]
    summary = history[["epoch", "train_loss", "val_loss", "auc", "accuracy"]].to_string()
    assert last["auc"] >= 0.9, summary
    # Separated, not merely ranked: the loss fell far under an unsure model's log 2 = 0.69.
    assert last["val_loss"] < min(0.3, before["val_loss"]), summary
    assert last["accuracy"] >= 0.9, summary
