"""The segmenters' combined and symmetric Lovasz losses, and the image head's loss."""

from __future__ import annotations

import numpy as np
import pytest
import segmentation_models_pytorch as smp
import torch
from torch import nn

from ptxseg.train.losses import (
    COMBINED_TERMS,
    ImageHeadLoss,
    SymmetricLovaszLoss,
    build_loss,
    segmenter_loss,
)


def _toy(seed: int = 0, batch: int = 2, size: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    """Distinct logits (no ties in the sort) and a mask with positives and negatives."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, 1, size, size, generator=generator)
    target = (torch.rand(batch, 1, size, size, generator=generator) > 0.6).float()
    target[0, 0, 0, 0], target[0, 0, 0, 1] = 1.0, 0.0
    return logits, target


def _lovasz_hinge_by_definition(logits: np.ndarray, labels: np.ndarray) -> float:
    """Berman et al. 2018, Alg. 1, written out: the batch flattened into one set of pixels."""
    x, y = logits.ravel().astype(np.float64), labels.ravel().astype(np.float64)
    errors = 1.0 - x * (2.0 * y - 1.0)
    order = np.argsort(-errors, kind="stable")
    errors_sorted, gt_sorted = errors[order], y[order]
    positives = gt_sorted.sum()
    intersection = positives - np.cumsum(gt_sorted)
    union = positives + np.cumsum(1.0 - gt_sorted)
    jaccard = 1.0 - intersection / union
    gradient = np.concatenate([jaccard[:1], np.diff(jaccard)])
    return float(np.dot(np.maximum(errors_sorted, 0.0), gradient))


def test_symmetric_lovasz_equals_its_definition():
    logits, target = _toy()
    x, y = logits.numpy(), target.numpy()
    assert len(np.unique(x)) == x.size
    expected = 0.5 * (_lovasz_hinge_by_definition(x, y) + _lovasz_hinge_by_definition(-x, 1 - y))
    loss = build_loss("symmetric_lovasz", "segmenter", per_image=False)
    assert isinstance(loss, SymmetricLovaszLoss)
    assert float(loss(logits, target)) == pytest.approx(expected, abs=1e-5)
    # not the plain hinge: the complement term matters
    plain = _lovasz_hinge_by_definition(x, y)
    assert abs(plain - expected) > 1e-3


def test_symmetric_lovasz_per_image_is_the_mean_over_images():
    logits, target = _toy(seed=1)
    per_image = build_loss("symmetric_lovasz", "segmenter", per_image=True)(logits, target)
    each = [
        SymmetricLovaszLoss(per_image=False)(logits[i : i + 1], target[i : i + 1])
        for i in range(len(logits))
    ]
    assert float(per_image) == pytest.approx(float(sum(each) / len(each)), abs=1e-6)


def test_combined_is_the_weighted_sum_of_its_terms():
    logits, target = _toy(seed=2)
    weights = {"bce": 2.7, "dice": 0.9, "focal": 1.5, "lovasz": 0.3, "symmetric_lovasz": 0.7}
    separate = {
        "bce": nn.BCEWithLogitsLoss(),
        "dice": smp.losses.DiceLoss("binary"),
        "focal": smp.losses.FocalLoss("binary", gamma=3.0),
        "lovasz": smp.losses.LovaszLoss("binary", per_image=True),
        "symmetric_lovasz": SymmetricLovaszLoss(per_image=True),
    }
    expected = sum(w * float(separate[k](logits, target)) for k, w in weights.items())
    loss = build_loss("combined", "segmenter", focal_gamma=3.0, per_image=True, weights=weights)
    assert float(loss(logits, target)) == pytest.approx(expected, rel=1e-5)


def test_combined_computes_only_the_terms_with_weight():
    logits, target = _toy(seed=3)
    weights = dict.fromkeys(COMBINED_TERMS, 0.0) | {"bce": 1.0, "dice": 1.0}
    loss = build_loss("combined", "segmenter", weights=weights)
    assert len(loss.losses) == 2
    # the winners' {bce: 1, dice: 1} is the default bce_dice
    bce_dice = build_loss("bce_dice", "segmenter")
    assert float(loss(logits, target)) == pytest.approx(float(bce_dice(logits, target)), rel=1e-6)
    # a key left out counts as 0
    assert len(build_loss("combined", "segmenter", weights={"focal": 1}).losses) == 1


@pytest.mark.parametrize("weights", [None, {}, dict.fromkeys(COMBINED_TERMS, 0)])
def test_combined_without_a_positive_weight_names_the_key(weights):
    with pytest.raises(ValueError, match=r"loss\.weights"):
        build_loss("combined", "segmenter", weights=weights)


def test_combined_refuses_unknown_terms_and_classifiers():
    with pytest.raises(ValueError, match=r"loss\.weights"):
        build_loss("combined", "segmenter", weights={"hinge": 1})
    for name in ("combined", "symmetric_lovasz"):
        with pytest.raises(ValueError, match="for segmenters"):
            build_loss(name, "classifier", weights={"bce": 1})


def test_classifier_losses_accept_the_configs_zero_weights():
    zeros = dict.fromkeys(COMBINED_TERMS, 0)
    logits, target = torch.tensor([[2.0], [-2.0]]), torch.tensor([[1.0], [0.0]])
    assert build_loss("bce", "classifier", weights=zeros)(logits, target) < 0.2
    assert build_loss("focal", "classifier", weights=zeros)(logits, target) < 0.2
    multilabel = build_loss("focal", "multilabel", weights=zeros)
    assert multilabel(torch.zeros(3, 14), torch.ones(3, 14)) > 0


@pytest.mark.parametrize("name", ["symmetric_lovasz", "combined"])
def test_new_losses_are_lower_for_better_logits(name):
    target = torch.zeros(2, 1, 8, 8)
    target[:, :, 2:6, 2:6] = 1
    loss = build_loss(name, "segmenter", weights={"focal": 1, "symmetric_lovasz": 1})
    good, bad = loss(target * 8 - 4, target), loss(4 - target * 8, target)
    assert good < bad and torch.isfinite(good)


# ----------------------------------------------------------------------------- image head


def _head_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(4)
    mask = torch.randn(2, 1, 8, 8, generator=generator)
    image = torch.tensor([[0.8], [-0.3]])
    target = torch.zeros(2, 1, 8, 8)
    target[1, 0, 5, 2] = 1.0  # image 0 empty, image 1 one positive pixel
    return mask, image, target


def test_image_head_loss_adds_weighted_bce_on_the_image_labels():
    mask, image, target = _head_batch()
    pixel = build_loss("bce_dice", "segmenter")
    loss = ImageHeadLoss(pixel, 0.4)((mask, image), target)
    labels = torch.tensor([[0.0], [1.0]])
    expected = pixel(mask, target) + 0.4 * nn.functional.binary_cross_entropy_with_logits(
        image, labels
    )
    assert float(loss) == pytest.approx(float(expected), rel=1e-6)
    # by hand: BCE(0.8, 0) = softplus(0.8), BCE(-0.3, 1) = softplus(0.3)
    by_hand = 0.5 * (np.log1p(np.exp(0.8)) + np.log1p(np.exp(0.3)))
    assert float(loss - pixel(mask, target)) == pytest.approx(0.4 * by_hand, rel=1e-5)


def test_image_head_loss_on_a_tensor_is_the_pixel_loss():
    mask, _, target = _head_batch()
    pixel = build_loss("lovasz", "segmenter")
    assert float(ImageHeadLoss(pixel, 0.4)(mask, target)) == pytest.approx(
        float(pixel(mask, target))
    )


def test_image_head_loss_backpropagates_into_the_image_logits():
    mask, image, target = _head_batch()
    mask.requires_grad_(True)
    image.requires_grad_(True)
    ImageHeadLoss(build_loss("bce", "segmenter"), 1.0)((mask, image), target).backward()
    assert image.grad is not None and torch.all(image.grad != 0)
    assert mask.grad is not None and torch.any(mask.grad != 0)
    # gradient of w * mean BCE with respect to the logit: w * (sigmoid(z) - label) / B
    expected = (torch.sigmoid(image.detach()) - torch.tensor([[0.0], [1.0]])) / 2
    torch.testing.assert_close(image.grad, expected)


def test_segmenter_loss_wraps_in_the_head_only_with_a_weight():
    config = {"name": "combined", "weights": {"bce": 1.0, "dice": 0.0}, "per_image": False}
    assert not isinstance(segmenter_loss(config, None), ImageHeadLoss)
    wrapped = segmenter_loss(config, 0.25)
    assert isinstance(wrapped, ImageHeadLoss) and wrapped.weight == 0.25
    mask, image, target = _head_batch()
    expected = nn.functional.binary_cross_entropy_with_logits(
        mask, target
    ) + 0.25 * nn.functional.binary_cross_entropy_with_logits(image, torch.tensor([[0.0], [1.0]]))
    assert float(wrapped((mask, image), target)) == pytest.approx(float(expected), rel=1e-6)


def test_the_lovasz_hinge_is_per_image_by_default_and_in_the_full_config(tmp_path):
    """Berman's reference lovasz_hinge and the 3rd place's symmetric Lovasz average per image:
    the schema's default, and full.yaml's segment loss, from the config file to the loss built."""
    import yaml
    from dag import ROOT

    from ptxseg import config as cfg
    from ptxseg.recipes import recipe_for
    from ptxseg.runtime.options import Runtime
    from ptxseg.train.losses import WeightedSum
    from ptxseg.train.settings import FitSettings

    def lovasz_terms(config: dict) -> list:
        recipe = recipe_for(config, "segment", next(iter(config["segment"]["archs"])))
        settings = FitSettings.from_config(recipe, 0, Runtime())
        loss = segmenter_loss(settings.loss, settings.head_weight)
        pixel = loss.pixel_loss if hasattr(loss, "pixel_loss") else loss
        assert isinstance(pixel, WeightedSum)
        return [term for term in pixel.losses if isinstance(term, SymmetricLovaszLoss)]

    full = cfg.load(ROOT / "configs" / "full.yaml")
    (term,) = lovasz_terms(full)
    assert term.lovasz.per_image is True
    path = tmp_path / "default.yaml"
    loss = {"name": "combined", "weights": {"bce": 1, "symmetric_lovasz": 1}}
    path.write_text(yaml.safe_dump({"segment": {"recipe": {"loss": loss}}}))
    (term,) = lovasz_terms(cfg.load(path))
    assert term.lovasz.per_image is True  # the schema's default
    loss["per_image"] = False
    path.write_text(yaml.safe_dump({"segment": {"recipe": {"loss": loss}}}))
    (term,) = lovasz_terms(cfg.load(path))
    assert term.lovasz.per_image is False
