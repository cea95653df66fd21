"""Which training images an epoch sees: all, positives only, or a sliding positive fraction.

The SIIM seed baseline trained its segmenter on positive images only; the 1st-place solution
slid the share of positives in each epoch from 0.8 down to 0.4, so the model first learns what a
pneumothorax looks like and then learns to stay quiet on the many empty images.
"""

from __future__ import annotations

import numpy as np

SAMPLING_MODES = ("all", "positive", "positive_fraction")


def positive_fraction(epoch: int, epochs: int, start: float, end: float) -> float:
    """The share of positives in ``epoch`` (0-based): linear from ``start`` to ``end``."""
    if epochs <= 1:
        return start
    return start + (end - start) * epoch / (epochs - 1)


def epoch_indices(
    positive: np.ndarray,
    mode: str,
    epoch: int,
    epochs: int,
    rng: np.random.Generator,
    start: float = 0.8,
    end: float = 0.4,
) -> np.ndarray:
    """Shuffled dataset indices for one epoch.

    ``positive_fraction`` keeps every positive and draws negatives (without replacement, as
    far as there are enough) to make positives the scheduled share of the epoch.
    """
    positive = np.asarray(positive, dtype=bool)
    positives, negatives = np.flatnonzero(positive), np.flatnonzero(~positive)
    if mode == "all":
        chosen = np.arange(positive.size)
    elif mode == "positive":
        chosen = positives
    elif mode == "positive_fraction":
        share = positive_fraction(epoch, epochs, start, end)
        if not 0 < share <= 1:
            raise ValueError(f"positive fraction {share} must be in (0, 1]")
        wanted = round(positives.size * (1 - share) / share)
        drawn = rng.choice(negatives, size=min(wanted, negatives.size), replace=False)
        chosen = np.concatenate([positives, drawn])
    else:
        raise ValueError(f"unknown sampling mode {mode!r}; valid: {', '.join(SAMPLING_MODES)}")
    if chosen.size == 0:
        raise ValueError(f"sampling mode {mode!r} leaves no training images in epoch {epoch}")
    return rng.permutation(chosen)


def mixed_order(
    labelled: np.ndarray,
    rng: np.random.Generator,
    *,
    extra: int,
    offset: int,
    share: float,
    batch_size: int,
) -> np.ndarray:
    """The epoch's ``labelled`` order with indices of a second set (``offset`` .. ``offset + extra``,
    e.g. pseudo-labelled NIH images after the SIIM ones) woven in, so that every batch of
    ``batch_size`` holds ``share`` of them (at least one, at most all but one). The second set is
    walked through in shuffled passes, as many as the epoch's batches need."""
    if extra < 1 or share <= 0:
        return labelled
    per_batch = min(batch_size - 1, max(1, round(share * batch_size)))
    own = batch_size - per_batch
    batches = -(-len(labelled) // own)
    need = batches * per_batch
    passes = -(-need // extra)
    drawn = np.concatenate([rng.permutation(extra) for _ in range(passes)])[:need] + offset
    parts = []
    for b in range(batches):
        parts += [labelled[b * own : (b + 1) * own], drawn[b * per_batch : (b + 1) * per_batch]]
    return np.concatenate(parts)
