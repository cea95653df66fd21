"""What differs between model kinds: how a batch is scored during training evaluation.

Evaluation streams over the held-out images batch by batch, so memory does not grow with the
number of images (a fold of the real data at 512 would be gigabytes of probability maps).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from ptxseg.data.datasets import RepackedImages
from ptxseg.models.outputs import as_float, split_logits
from ptxseg.runtime.precision import autocast
from ptxseg.runtime.predict import ordered_batches
from ptxseg.train.loop import Task
from ptxseg.train.losses import build_loss, segmenter_loss
from ptxseg.train.metrics import SegmentationScores, classification_metrics, multilabel_auc


def _batches(
    model: nn.Module,
    dataset: RepackedImages,
    batch_size: int,
    device: torch.device,
    amp: bool,
    channels_last: bool,
    num_workers: int,
):
    model.eval()
    with torch.no_grad():
        for batch in ordered_batches(dataset, batch_size, num_workers, device):
            images = batch["image"].to(device)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with autocast(device, amp):
                output = model(images)
            yield as_float(output), batch["target"].to(device)


def segmentation_task(
    loss: dict,
    batch_size: int,
    device: torch.device,
    positive: np.ndarray,
    amp: bool = True,
    channels_last: bool = True,
    num_workers: int = 0,
    threshold: float = 0.5,
    head_weight: float | None = None,
) -> Task:
    """The pixel loss (plus the classification head's image-level BCE at ``head_weight``); the
    held-out scores, with the head's AUC where the model has a head."""
    loss_fn = segmenter_loss(loss, head_weight)

    def evaluate(model: nn.Module, dataset: RepackedImages) -> dict:
        scores, losses, heads, labels = SegmentationScores(), [], [], []
        for output, target in _batches(
            model, dataset, batch_size, device, amp, channels_last, num_workers
        ):
            losses.append(float(loss_fn(output, target)) * len(target))
            logits, head = split_logits(output)
            truth = target[:, 0].cpu().numpy() > 0.5
            scores.add((torch.sigmoid(logits) >= threshold)[:, 0].cpu().numpy(), truth)
            if head is not None:
                heads.append(torch.sigmoid(head[:, 0]).cpu().numpy())
                labels.append(truth.reshape(len(truth), -1).any(axis=1))
        metrics = {"val_loss": sum(losses) / len(dataset), **scores.result()}
        if heads:
            image_level = classification_metrics(np.concatenate(labels), np.concatenate(heads))
            metrics["head_auc"] = image_level["auc"]
        return metrics

    return Task(loss=loss_fn, evaluate=evaluate, positive=positive)


def classification_task(
    loss: dict,
    batch_size: int,
    device: torch.device,
    names: Sequence[str] | None = None,
    amp: bool = True,
    channels_last: bool = True,
    num_workers: int = 0,
) -> Task:
    """One logit (pneumothorax) or, with ``names``, one per NIH finding."""
    multilabel = names is not None
    loss_fn = build_loss(kind="multilabel" if multilabel else "classifier", **loss)

    def evaluate(model: nn.Module, dataset: RepackedImages) -> dict:
        losses, probabilities, labels = [], [], []
        for logits, target in _batches(
            model, dataset, batch_size, device, amp, channels_last, num_workers
        ):
            losses.append(float(loss_fn(logits, target)) * len(target))
            probabilities.append(torch.sigmoid(logits).cpu().numpy())
            labels.append(target.cpu().numpy())
        p, y = np.concatenate(probabilities), np.concatenate(labels)
        metrics = multilabel_auc(y, p, list(names)) if multilabel else classification_metrics(y, p)
        return {"val_loss": sum(losses) / len(dataset), **metrics}

    return Task(loss=loss_fn, evaluate=evaluate)
