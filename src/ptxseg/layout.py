"""Where every stage's outputs live in the results folder, and the names of kept models.

One module knows the layout: the rules (``workflow/rules/common.smk``), the rule scripts and the
package ask it; nobody else builds a ``fold<k>`` path or slices a member name out of a file name.
Plain strings, no imports beyond the standard library, so the Snakefile can use it at DAG build.
Every argument may be a value or a Snakemake wildcard pattern alike: ``fold_dir("segment",
"{arch}", "{fold}")`` is the rule's output pattern, ``fold_dir("segment", "unet_resnet34", 0)``
one job's folder.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePath

MAPS_SUFFIX = ".h5"  # probability maps (ptxseg.io.maps)
# The tables in a fold job's folder beside its models: its training's (metrics, summary) and its
# OOF predictions' (oof*, written by the architecture's prediction job, ptxseg.train.oof).
OOF_CSV = "oof.csv"  # a classifier's OOF probabilities, one column per member
OOF_IDS = "oof_ids.csv"  # a segmenter's OOF image order (its maps' rows)
OOF_SUMMARY = "oof_summary.json"  # the members' OOF metrics and TTA passes (ptxseg.train.oof)
METRICS = "metrics.csv"
SUMMARY = "summary.json"
BEST, SWA, EMA, SNAPSHOT = "best", "swa", "ema", "snapshot"
# The ablation's reference lever: the segment stage's own recipe, whose fold jobs are the stage's.
BASELINE = "baseline"
_SNAPSHOT = re.compile(r"^snapshot(\d+)$")
_FOLD = re.compile(r"^fold(\d+)$")
_PROBABILITY = "prob_"
_POINT = re.compile(r"^n(\d+)_m(\d+)$")
_MODEL = re.compile(r"^model_(\w+)\.pt$")  # model_file's names
_OOF_MAPS = re.compile(rf"^oof_(\w+){re.escape(MAPS_SUFFIX)}$")  # oof_maps_file's names


def snapshot_member(k: int) -> str:
    """The member name of the ``k``-th kept cosine-cycle snapshot."""
    return f"{SNAPSHOT}{k}"


def snapshot_index(member: str) -> int | None:
    """``k`` of member ``snapshot<k>``; None for any other member."""
    found = _SNAPSHOT.match(member)
    return int(found[1]) if found else None


def fold_name(fold: int | str) -> str:
    return f"fold{fold}"


def model_file(folder: str | PurePath, member: str) -> str:
    """A kept model's file in a training job's folder."""
    return f"{folder}/model_{member}.pt"


def oof_maps_file(folder: str | PurePath, member: str) -> str:
    """A segmenter member's OOF probability maps in a training job's folder."""
    return f"{folder}/oof_{member}{MAPS_SUFFIX}"


def model_member(path: str | PurePath) -> str | None:
    """The member of a kept model file (``model_file``); None for any other file."""
    found = _MODEL.match(PurePath(path).name)
    return found[1] if found else None


def oof_maps_member(path: str | PurePath) -> str | None:
    """The member of a segmenter's OOF map file (``oof_maps_file``); None for any other file."""
    found = _OOF_MAPS.match(PurePath(path).name)
    return found[1] if found else None


def augsearch_point(n: int | str, m: int | str) -> str:
    """The name of a RandAugment search point, ``n<N>_m<M>``: its folder, log and benchmark."""
    return f"n{n}_m{m}"


def augsearch_point_of(name: str) -> tuple[int, int]:
    """(N, M) of a point name ``n<N>_m<M>``."""
    found = _POINT.match(name)
    if not found:
        raise ValueError(f"{name!r} is not a RandAugment point name (n<N>_m<M>)")
    return int(found[1]), int(found[2])


def job_name(arch: str, fold: int | str | None = None) -> str:
    """The name of a training job's log and benchmark: ``<arch>`` or ``<arch>_fold<k>``."""
    return arch if fold is None else f"{arch}_{fold_name(fold)}"


def ablation_job(lever: str, arch: str, fold: int | str) -> str:
    """The name of an ablation fold job's log and benchmark: ``<lever>_<arch>_fold<k>``."""
    return f"{lever}_{job_name(arch, fold)}"


def fold_of(path_or_name: str | PurePath) -> int:
    """The fold of a fold folder, a file inside one, or a ``fold<k>`` column or map file name."""
    parts = PurePath(path_or_name).parts
    for part in reversed(parts):
        found = _FOLD.match(PurePath(part).name.removesuffix(MAPS_SUFFIX))
        if found:
            return int(found[1])
    raise ValueError(f"{path_or_name}: no fold<k> part in this path")


def by_fold(paths) -> dict[int, list[str]]:
    """Files grouped by their fold (``fold_of``), in their order within each fold."""
    grouped: dict[int, list[str]] = {}
    for path in paths:
        grouped.setdefault(fold_of(path), []).append(str(path))
    return grouped


def training_job_of(path: str | PurePath) -> tuple[str, str, int | None]:
    """(stage, architecture, fold or None) of a file in a training job's folder:
    ``<stage>/<arch>/fold<k>/<file>`` or ``pretrain/<arch>/<file>``."""
    folder = PurePath(path).parent
    found = _FOLD.match(folder.name)
    if found:
        return folder.parent.parent.name, folder.parent.name, int(found[1])
    return folder.parent.name, folder.name, None


def benchmark_rule_of(path: str | PurePath) -> str:
    """The rule of a benchmark file (``benchmarks/<rule>/<job>.tsv``)."""
    return PurePath(path).parent.name


def probability_column(member: str) -> str:
    """The column of a classifier member's OOF probability in ``oof.csv``."""
    return f"{_PROBABILITY}{member}"


HEAD_SOURCE = "head:"  # an image-level source that is a segmenter's classification head


def head_source(arch: str) -> str:
    """The name of a segmenter's classification head among the ensemble's image-level sources."""
    return f"{HEAD_SOURCE}{arch}"


def head_arch(source: str) -> str | None:
    """The segmenter of an image-level source that is a head; None for a classifier."""
    return source[len(HEAD_SOURCE) :] if source.startswith(HEAD_SOURCE) else None


ROUND2 = "-round2"  # a second-round segmenter: the architecture retrained with NIH pseudo-labels


def round2_name(arch: str) -> str:
    """The results name of ``arch``'s second round: its models, OOF and test maps live under it,
    so the ensemble, the submission and ``ptxseg predict`` take it as one more segmenter."""
    return f"{arch}{ROUND2}"


def round1_arch(name: str) -> str:
    """The architecture of a segmenter's results name (itself for a first-round one)."""
    return name.removesuffix(ROUND2)


def probability_members(columns) -> list[str]:
    """The members whose probability columns are among ``columns``, in their order."""
    return [c[len(_PROBABILITY) :] for c in columns if c.startswith(_PROBABILITY)]


def fold_columns(columns) -> list[str]:
    """The per-fold probability columns of a classifier's test predictions, in fold order."""
    found = [c for c in columns if _FOLD.match(c)]
    return sorted(found, key=fold_of)


@dataclass(frozen=True)
class Layout:
    """The results folder's layout, under ``root`` ('results' for the rules)."""

    root: str = "results"

    def _at(self, *parts) -> str:
        return "/".join([str(self.root), *map(str, parts)])

    # Data: the demo's inputs, indexes, folds, repacked images.
    def demo(self, dataset: str) -> str:
        """Folder of the generated demo data set ('siim' or 'nih')."""
        return self._at("demo", dataset)

    def data(self, name: str) -> str:
        """A table of the data stage: siim_index.csv, siim_folds.csv, nih_index.csv, ..."""
        return self._at("data", name)

    def repack_root(self, source: str) -> str:
        """Folder of the repacked images of 'siim' or 'nih': manifests' paths are relative to it."""
        return self._at("repack", source)

    def repack_images(self, source: str, size: int | str) -> str:
        """The PNGs of one size (train/, test/, masks/ for SIIM), one job's output."""
        return self._at("repack", source, size)

    def repack_manifest(self, source: str, size: int | str) -> str:
        return self._at("repack", source, f"manifest_{size}.csv")

    def repack_stats(self, source: str, size: int | str) -> str:
        """Mean and std of one size's images, what model inputs are scaled with."""
        return self._at("repack", source, f"stats_{size}.json")

    def fingerprints(self, source: str) -> str:
        """Every image's content fingerprint (ptxseg.data.overlap) of 'siim' or 'nih'."""
        return self.data(f"{source}_fingerprints.npy")

    # Training: NIH pretraining per architecture, classifiers and segmenters per fold.
    def pretrain_dir(self, arch: str) -> str:
        return self._at("pretrain", arch)

    def pretrain_file(self, arch: str, name: str) -> str:
        """metrics.csv or summary.json of a pretraining."""
        return f"{self.pretrain_dir(arch)}/{name}"

    def fold_dir(self, stage: str, arch: str, fold: int | str) -> str:
        """Folder of one fold model of 'classify' or 'segment'."""
        return self._at(stage, arch, fold_name(fold))

    def model(self, stage: str, arch: str, fold: int | str | None, member: str) -> str:
        """A kept model file; ``fold`` None for a pretraining."""
        folder = self.pretrain_dir(arch) if fold is None else self.fold_dir(stage, arch, fold)
        return model_file(folder, member)

    def fold_file(self, stage: str, arch: str, fold: int | str, name: str) -> str:
        """oof.csv, oof_ids.csv, oof_summary.json, metrics.csv or summary.json of one fold model."""
        return f"{self.fold_dir(stage, arch, fold)}/{name}"

    def oof_maps(self, arch: str, fold: int | str, member: str) -> str:
        """A segmenter member's OOF probability maps on its held-out fold."""
        return oof_maps_file(self.fold_dir("segment", arch, fold), member)

    def training_state(self, stage: str, arch: str, fold: int | str | None = None) -> str:
        """The resume state of a training job, outside its declared outputs (Snakemake removes
        a failed job's outputs; the state must survive for the rerun to continue)."""
        name = arch if fold is None else f"{arch}/{fold_name(fold)}"
        return self._at("checkpoints", stage, f"{name}.pt")

    # Test-set prediction.
    def test_probabilities(self, arch: str) -> str:
        """A classifier's test probabilities, one column per fold."""
        return self._at("predict", "classify", arch, "test.csv")

    def test_maps(self, arch: str, fold: int | str) -> str:
        return self._at("predict", "segment", arch, f"{fold_name(fold)}{MAPS_SUFFIX}")

    def test_ids(self, arch: str) -> str:
        """The image order of a segmenter's test maps."""
        return self._at("predict", "segment", arch, "ids.csv")

    # Ensemble, submission, report.
    def ensemble(self, name: str) -> str:
        """ensemble.json, scores.csv, threshold_search.csv, oof_images.csv, oof_blend.h5."""
        return self._at("ensemble", name)

    @property
    def submission(self) -> str:
        return self._at("submission.csv")

    @property
    def submission_details(self) -> str:
        """The submission's side table: each test image's gate probability, calibrated, and its
        spread over the fold models."""
        return self._at("submission_details.csv")

    @property
    def report(self) -> str:
        return self._at("report.html")

    @property
    def model_card(self) -> str:
        """The run's model card (Markdown): intended use, data, recipe, OOF scores, limits."""
        return self._at("model_card.md")

    # The compound-scaling search.
    def scaling(self, name: str) -> str:
        """summary.csv, score_vs_flops.png, best.yaml, search.json."""
        return self._at("scaling", name)

    def scaling_dir(self, candidate: str) -> str:
        """One candidate's training folder: its model, metrics, OOF maps and row.json."""
        return self._at("scaling", candidate)

    def scaling_candidate(self, candidate: str, name: str) -> str:
        """row.json or metrics.csv of one candidate."""
        return f"{self.scaling_dir(candidate)}/{name}"

    # The RandAugment policy search: one training folder per (n, m) point.
    def augsearch(self, name: str) -> str:
        """summary.csv, heatmap.png, best.yaml, search.json, report.html."""
        return self._at("augsearch", name)

    def augsearch_dir(self, point: str) -> str:
        """One grid point's training folder (`augsearch_point`): its model, maps and row.json."""
        return self._at("augsearch", point)

    def augsearch_file(self, point: str, name: str) -> str:
        """row.json, metrics.csv, summary.json or oof_ids.csv of one grid point."""
        return f"{self.augsearch_dir(point)}/{name}"

    # The ablation of the winners' levers: per lever, one training folder per fold and a search.
    def ablation(self, name: str) -> str:
        """summary.csv, report.html."""
        return self._at("ablation", name)

    def ablation_fold_dir(self, lever: str, arch: str, fold: int | str) -> str:
        """One fold job of a lever (`ablation_fold`): the files a segmenter fold job writes."""
        return self._at("ablation", lever, arch, fold_name(fold))

    def ablation_fold_file(self, lever: str, arch: str, fold: int | str, name: str) -> str:
        """oof_ids.csv, metrics.csv or summary.json of one fold job of a lever."""
        return f"{self.ablation_fold_dir(lever, arch, fold)}/{name}"

    def ablation_model(self, lever: str, arch: str, fold: int | str, member: str) -> str:
        """A kept model of a lever's fold job."""
        return model_file(self.ablation_fold_dir(lever, arch, fold), member)

    def ablation_oof_maps(self, lever: str, arch: str, fold: int | str, member: str) -> str:
        """A kept member's OOF maps of a lever's fold job."""
        return oof_maps_file(self.ablation_fold_dir(lever, arch, fold), member)

    def ablation_segmenter_dir(self, lever: str, arch: str, fold: int | str) -> str:
        """The fold folder a lever's search reads: the lever's own, or for the baseline (the
        stage's recipe, not trained again) the segment stage's."""
        if lever == BASELINE:
            return self.fold_dir("segment", arch, fold)
        return self.ablation_fold_dir(lever, arch, fold)

    def ablation_segmenter_file(self, lever: str, arch: str, fold: int | str, name: str) -> str:
        """oof_ids.csv, metrics.csv or summary.json of the fold job a lever's search reads."""
        return f"{self.ablation_segmenter_dir(lever, arch, fold)}/{name}"

    def ablation_benchmark(self, lever: str, arch: str, fold: int | str) -> str:
        """The benchmark of a lever's fold job (the baseline's: its train_segmenter job)."""
        if lever == BASELINE:
            return self.benchmark("train_segmenter", job_name(arch, fold))
        return self.benchmark("ablation_fold", ablation_job(lever, arch, fold))

    def ablation_ensemble(self, lever: str, name: str) -> str:
        """A lever's search: ensemble.json, scores.csv, threshold_search.csv, oof_images.csv,
        oof_blend.h5."""
        return self._at("ablation", lever, "ensemble", name)

    def ablation_state(self, lever: str, arch: str, fold: int | str) -> str:
        """The resume state of a lever's fold job (outside its outputs, as training_state)."""
        return self._at("checkpoints", "ablation", lever, arch, f"{fold_name(fold)}.pt")

    # The NIH second round: candidate images, and per fold the pseudo-labels its round 1 made.
    def pseudo_labels(self, name: str) -> str:
        """candidates.csv (the NIH images predicted), summary.csv (counts per fold)."""
        return self._at("pseudo_labels", name)

    def pseudo_label_file(self, fold: int | str, name: str) -> str:
        """labels.csv (every candidate, kept or not, and why) or summary.json of one fold."""
        return self._at("pseudo_labels", fold_name(fold), name)

    def pseudo_label_masks(self, fold: int | str) -> str:
        """The kept pseudo-masks of one fold (PNGs at the segment size)."""
        return self._at("pseudo_labels", fold_name(fold), "masks")

    # Logs and benchmarks of every rule.
    def log(self, rule: str, name: str) -> str:
        return self._at("logs", rule, f"{name}.log")

    def benchmark(self, rule: str, name: str) -> str:
        return f"{self.benchmarks_of(rule)}/{name}.tsv"

    def benchmarks_of(self, rule: str) -> str:
        """The folder of a rule's benchmark files, one per job."""
        return self._at("benchmarks", rule)


RESULTS = Layout()
