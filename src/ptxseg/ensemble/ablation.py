"""The OOF files an ablation lever's search reads: the stage's classifiers and the lever's folds of
the ablated segmenter (the baseline's: the segment stage's own folds, the same recipe)."""

from __future__ import annotations

from ptxseg.ensemble.oof import SegmenterFold, oof_files
from ptxseg.layout import Layout


def lever_oof_files(
    layout: Layout,
    lever: str,
    classify_archs: list[str],
    arch: str,
    n_folds: int,
    kept: list[str],
) -> tuple[dict[str, dict[int, str]], dict[str, dict[int, SegmenterFold]]]:
    """Classifier OOF CSVs (every architecture of the stage) and the lever's segmenter fold files
    of ``arch`` (the ``kept`` members), as `ptxseg.ensemble.search.oof_files` gives them."""
    classifiers, _ = oof_files(layout, classify_archs, [], n_folds, kept)
    segmenters = {
        arch: {
            fold: SegmenterFold.in_folder(layout.ablation_segmenter_dir(lever, arch, fold), kept)
            for fold in range(n_folds)
        }
    }
    return classifiers, segmenters
