"""Which SIIM-ACR distribution the folders under ``data.siim.root`` hold, and where its parts are.

People get the data in one of several shapes, none of them the competition's own train set:

- ``mirror``: the stage-1 release as mirrored on Kaggle (jesperdramsch): ``dicom-images-train/``
  and ``dicom-images-test/`` (nested ``<study>/<series>/<sop>.dcm``) and ``train-rle.csv``
  (header ``ImageId, EncodedPixels``), often with an identical second copy of it all in a
  subfolder (``pneumothorax/``);
- ``competition``: Kaggle's stage-2 download: ``stage_2_images/ID_*.dcm`` (the stage-2 TEST
  images) and ``stage_2_train.csv`` (header ``ImageId,EncodedPixels``, labels of the stage-1
  train and test images), but no train images: those come from a mirror, given beside it;
- ``vbookshelf``: PNGs ``png_images/<n>_<train|test>_<0|1>_.png`` and masks of the same names in
  ``png_masks/`` (255 = lesion), mapped to ImageIds by ``stage_1_train_images.csv`` and
  ``stage_1_test_images.csv`` (``new_filename, ImageId, has_pneumo``);
- ``iafoss``: ``train/``, ``test/`` and ``masks/`` folders of PNGs named by ImageId, at one of
  128, 256, 512 or 1024 px.

Detection looks at folder and file names near each root only (no image is opened, no tree
walked), so that it runs at DAG build in well under a second; `SiimLayout` records the outcome.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from ptxseg.io.files import same_content, walk_files

log = logging.getLogger(__name__)

LAYOUTS = ("auto", "mirror", "competition", "vbookshelf", "iafoss")
# The size of the competition's images and labels: its scores are computed at it.
COMPETITION_SIZE = 1024
SIIM_HEADER = "ImageId, EncodedPixels"  # the release's header, the space included
COMPETITION_HEADER = "ImageId,EncodedPixels"

MIRROR_TRAIN, MIRROR_TEST, MIRROR_LABELS = (
    "dicom-images-train",
    "dicom-images-test",
    "train-rle.csv",
)
STAGE2_IMAGES, STAGE2_LABELS = "stage_2_images", "stage_2_train.csv"
VB_IMAGES, VB_MASKS = "png_images", "png_masks"
VB_MAPPING = ("stage_1_train_images.csv", "stage_1_test_images.csv")
IAFOSS = ("train", "test", "masks")
# Folders that hold images: never searched for a layout inside (a mirror's train folder alone
# holds ten thousand study folders).
_IMAGE_FOLDERS = {MIRROR_TRAIN, MIRROR_TEST, STAGE2_IMAGES, VB_IMAGES, VB_MASKS, *IAFOSS}
_SEARCH_DEPTH = 2  # a root, its subfolders and theirs: the mirror's copy sits in pneumothorax/

MIRROR_HINT = (
    "the train DICOMs come from a mirror of the stage-1 release, e.g. the jesperdramsch mirror "
    f"(its {MIRROR_TRAIN}/, {MIRROR_TEST}/ and {MIRROR_LABELS})"
)


class LayoutError(ValueError):
    """Folders that hold no usable SIIM-ACR layout; the message names the folder and the fix."""


@dataclass(frozen=True)
class SiimLayout:
    """Where one SIIM-ACR data set's train images, test images and labels are."""

    name: str  # 'mirror', 'competition + mirror', 'vbookshelf', 'iafoss', 'folders'
    image_kind: str  # 'dicom' or 'png'
    train: tuple[str, ...]  # folders of train images (all searched, any nesting)
    test: tuple[str, ...]  # folders of test images
    labels: str  # the label file ('rle') or the folder of mask PNGs ('masks')
    label_kind: str  # 'rle' or 'masks'
    dialect: str  # 'siim' (header with the space), 'competition' (without) or 'png masks'
    mapping: tuple[str, ...] = ()  # vbookshelf: its train and test CSVs (file name -> ImageId)
    mask_size: int | None = None  # side of the mask PNGs; None: labels at each image's size
    notes: tuple[str, ...] = field(default=(), compare=False)

    @classmethod
    def folders(
        cls, train: str, test: str, labels: str, name: str = "folders", dialect: str = ""
    ) -> SiimLayout:
        """A train and a test folder of DICOMs and a label file, named one by one."""
        dialect = dialect or label_dialect(labels)
        return cls(name, "dicom", (str(train),), (str(test),), str(labels), "rle", dialect)

    def to_dict(self) -> dict:
        """Plain lists and strings (a rule's params; `from_dict` reads it back)."""
        return {
            key: list(value) if isinstance(value, tuple) else value
            for key, value in asdict(self).items()
            if key != "notes"
        }

    @classmethod
    def from_dict(cls, data: dict) -> SiimLayout:
        fields = {k: tuple(v) if isinstance(v, list) else v for k, v in dict(data).items()}
        return cls(**fields)

    def inputs(self) -> dict[str, list[str]]:
        """Every folder and file the index reads, by role (a rule's inputs)."""
        return {
            "train": list(self.train),
            "test": list(self.test),
            "labels": [self.labels],
            "mapping": list(self.mapping),
        }

    def truth(self) -> str:
        """What scores against these labels are computed against, for ``scored_at``'s text."""
        if self.label_kind == "rle":
            return Path(self.labels).name
        size = f"{self.mask_size} px" if self.mask_size else "their own size"
        text = f"{Path(self.labels).name}/ PNG masks at {size}"
        if self.mask_size != COMPETITION_SIZE:
            text += (
                f"; not the competition's {COMPETITION_SIZE} px labels, so not comparable "
                "with its scores"
            )
        return text

    def describe(self) -> str:
        lines = [
            f"SIIM-ACR layout {self.name!r} ({self.image_kind} images)",
            f"  train images: {', '.join(self.train)}",
            f"  test images:  {', '.join(self.test)}",
            f"  labels:       {self.labels} ({self.dialect}"
            + (f", {self.mask_size} px" if self.mask_size else "")
            + ")",
        ]
        lines += [f"  mapping:      {path}" for path in self.mapping]
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)


def label_dialect(path: str | os.PathLike) -> str:
    """'siim' or 'competition' by the label file's header (both are read alike); 'unknown' else."""
    try:
        with open(path, encoding="utf-8-sig") as handle:
            header = handle.readline().strip()
    except OSError:
        return "unknown"
    return {SIIM_HEADER: "siim", COMPETITION_HEADER: "competition"}.get(header, "unknown")


def png_side(folder: str | os.PathLike) -> int | None:
    """The side of the first PNG below ``folder`` from its header (no decoding); None if none."""
    from PIL import Image

    first = next(walk_files(folder, ".png"), None)
    if first is None:
        return None
    with Image.open(first) as image:
        return max(image.size)


@dataclass
class _Found:
    """Marker folders and files below the roots, by what they are."""

    mirror_train: list[Path] = field(default_factory=list)
    mirror_test: list[Path] = field(default_factory=list)
    mirror_labels: list[Path] = field(default_factory=list)
    stage2_images: list[Path] = field(default_factory=list)
    stage2_labels: list[Path] = field(default_factory=list)
    vbookshelf: list[Path] = field(default_factory=list)
    iafoss: list[Path] = field(default_factory=list)

    def kinds(self) -> list[str]:
        kinds = []
        if self.mirror_train or self.mirror_test or self.mirror_labels:
            kinds.append("mirror")
        if self.stage2_images or self.stage2_labels:
            kinds.append("competition")
        if self.vbookshelf:
            kinds.append("vbookshelf")
        if self.iafoss:
            kinds.append("iafoss")
        return kinds


def _containers(root: Path) -> Iterator[Path]:
    """``root`` and the folders below it to _SEARCH_DEPTH, image folders not entered, symlinks
    followed, each real folder once."""
    seen: set[str] = set()
    level = [root]
    for depth in range(_SEARCH_DEPTH + 1):
        below = []
        for folder in level:
            real = os.path.realpath(folder)
            if real in seen:
                continue
            seen.add(real)
            yield folder
            if depth < _SEARCH_DEPTH:
                try:
                    entries = sorted(os.scandir(folder), key=lambda e: e.name)
                except OSError:
                    continue
                below += [
                    Path(e.path)
                    for e in entries
                    if e.is_dir() and e.name not in _IMAGE_FOLDERS and not e.name.startswith(".")
                ]
        level = below


def _has_png(folder: Path, look_at: int = 50) -> bool:
    try:
        with os.scandir(folder) as entries:
            for k, entry in enumerate(entries):
                if entry.name.endswith(".png"):
                    return True
                if k >= look_at:
                    break
    except OSError:
        return False
    return False


def _scan(roots: Iterable[Path]) -> _Found:
    found = _Found()
    for root in roots:
        for folder in _containers(root):
            here = {name: folder / name for name in os.listdir(folder)}
            if (folder / MIRROR_TRAIN).is_dir():
                found.mirror_train.append(folder / MIRROR_TRAIN)
            if (folder / MIRROR_TEST).is_dir():
                found.mirror_test.append(folder / MIRROR_TEST)
            if MIRROR_LABELS in here and here[MIRROR_LABELS].is_file():
                found.mirror_labels.append(here[MIRROR_LABELS])
            if (folder / STAGE2_IMAGES).is_dir():
                found.stage2_images.append(folder / STAGE2_IMAGES)
            if STAGE2_LABELS in here and here[STAGE2_LABELS].is_file():
                found.stage2_labels.append(here[STAGE2_LABELS])
            if (folder / VB_IMAGES).is_dir() and (folder / VB_MASKS).is_dir():
                found.vbookshelf.append(folder)
            if (
                (folder / "train").is_dir()
                and (folder / "masks").is_dir()
                and _has_png(folder / "train")
            ):
                found.iafoss.append(folder)
    return found


def _one_file(paths: list[Path], what: str, notes: list[str]) -> Path:
    """One of several copies of a file: identical copies are one, with a note; different, an error."""
    first = paths[0]
    for other in paths[1:]:
        if not same_content(first, other):
            raise LayoutError(
                f"two different {what} files: {first} and {other}; either could be the one "
                "meant: remove one, or name it in data.siim.train_rle_csv"
            )
    if len(paths) > 1:
        notes.append(
            f"{len(paths)} identical copies of {what} ({', '.join(map(str, paths))}); "
            f"{first} is read"
        )
    return first


def _listing(roots: list[Path]) -> str:
    lines = []
    for root in roots:
        names = sorted(os.listdir(root))
        shown = ", ".join(names[:12]) + (f", ... ({len(names)} entries)" if len(names) > 12 else "")
        lines.append(f"{root} holds: {shown or 'nothing'}")
    return "; ".join(lines)


def _nothing_found(roots: list[Path]) -> LayoutError:
    inside = [str(root) for root in roots if root.name in _IMAGE_FOLDERS]
    above = (
        f" {', '.join(inside)} is a download's image folder: give the folder above it."
        if inside
        else ""
    )
    return LayoutError(
        "data.siim.root: no SIIM-ACR layout found. Looked (in each root and two levels of "
        f"subfolders) for {MIRROR_TRAIN}/ + {MIRROR_TEST}/ + {MIRROR_LABELS} (the mirror), "
        f"{STAGE2_IMAGES}/ + {STAGE2_LABELS} (Kaggle's competition download), {VB_IMAGES}/ + "
        f"{VB_MASKS}/ (vbookshelf PNGs), train/ + test/ + masks/ of PNGs (iafoss). "
        f"{_listing(roots)}. Point data.siim.root at the folder as downloaded, or name the "
        "folders in data.siim.train_dicom_dir, test_dicom_dir and train_rle_csv." + above
    )


def _competition_alone(found: _Found) -> LayoutError:
    where = ", ".join(map(str, found.stage2_images + found.stage2_labels))
    return LayoutError(
        f"{where}: this is Kaggle's competition download, which holds the stage-2 TEST images "
        f"({STAGE2_IMAGES}/, 3,205 files named ID_*.dcm) and the labels ({STAGE2_LABELS}), but "
        f"no train images. {MIRROR_HINT[0].upper()}{MIRROR_HINT[1:]}: download it and give its "
        "folder as a second entry of data.siim.root, e.g. data.siim.root: "
        f"[{found.stage2_images[0].parent if found.stage2_images else found.stage2_labels[0].parent}, "
        "/data/siim-mirror]; or name a folder of train DICOMs in data.siim.train_dicom_dir."
    )


def _mirror(found: _Found, notes: list[str]) -> SiimLayout:
    if not found.mirror_train:
        raise LayoutError(
            f"{', '.join(map(str, found.mirror_test + found.mirror_labels))}: a mirror's files "
            f"without its {MIRROR_TRAIN}/ folder; add it below data.siim.root, or name the train "
            "DICOM folder in data.siim.train_dicom_dir"
        )
    if not found.mirror_test:
        raise LayoutError(
            f"{found.mirror_train[0]}: no {MIRROR_TEST}/ beside it; add it, or name the test DICOM "
            "folder in data.siim.test_dicom_dir"
        )
    if not found.mirror_labels:
        raise LayoutError(
            f"{found.mirror_train[0]}: no {MIRROR_LABELS} beside it (nor {STAGE2_LABELS} in "
            "data.siim.root); add it, or name the label file in data.siim.train_rle_csv"
        )
    labels = _one_file(found.mirror_labels, MIRROR_LABELS, notes)
    if len(found.mirror_train) > 1:
        notes.append(
            f"{len(found.mirror_train)} {MIRROR_TRAIN}/ folders ({', '.join(map(str, found.mirror_train))}): "
            "all are read; files in more than one are compared by content and read once"
        )
    return SiimLayout(
        "mirror",
        "dicom",
        tuple(map(str, found.mirror_train)),
        tuple(map(str, found.mirror_test)),
        str(labels),
        "rle",
        label_dialect(labels),
        notes=tuple(notes),
    )


def _competition(found: _Found, notes: list[str], train_override: str) -> SiimLayout:
    if not found.stage2_images:
        raise LayoutError(
            f"{found.stage2_labels[0]}: the competition's labels without its {STAGE2_IMAGES}/ "
            "folder (the test images); add it below data.siim.root, or name the test DICOM "
            "folder in data.siim.test_dicom_dir"
        )
    if not (found.mirror_train or train_override):
        raise _competition_alone(found)
    test = tuple(map(str, found.stage2_images))
    if found.stage2_labels:
        labels = _one_file(found.stage2_labels, STAGE2_LABELS, notes)
        # stage_2_train.csv labels the stage-1 test images too (12,047 images): the mirror's
        # dicom-images-test holds them, so it joins the train set.
        train = tuple(map(str, found.mirror_train + found.mirror_test))
        notes.append(
            f"labels from {labels}: the competition's final label file, which also labels the "
            f"stage-1 test images, so the mirror's {MIRROR_TEST}/ is train data here"
            + (f" ({MIRROR_LABELS} in the mirror is not read)" if found.mirror_labels else "")
        )
    elif found.mirror_labels:
        labels = _one_file(found.mirror_labels, MIRROR_LABELS, notes)
        train = tuple(map(str, found.mirror_train))
        notes.append(
            f"labels from {labels}: no {STAGE2_LABELS} was found, so the mirror's own label file "
            f"(train images of {MIRROR_TRAIN}/ only)"
        )
    else:
        raise LayoutError(
            f"{test[0]}: neither {STAGE2_LABELS} nor {MIRROR_LABELS} below data.siim.root; add "
            "one, or name the label file in data.siim.train_rle_csv"
        )
    return SiimLayout(
        "competition + mirror",
        "dicom",
        train,
        test,
        str(labels),
        "rle",
        label_dialect(labels),
        notes=tuple(notes),
    )


def _vbookshelf(folder: Path, notes: list[str]) -> SiimLayout:
    mapping = tuple(folder / name for name in VB_MAPPING)
    missing = [str(path) for path in mapping if not path.is_file()]
    if missing:
        raise LayoutError(
            f"{folder}: a vbookshelf PNG set without {', '.join(missing)}, which map its file "
            "names to ImageIds and to train or test; add them from the same download"
        )
    masks = folder / VB_MASKS
    return SiimLayout(
        "vbookshelf",
        "png",
        (str(folder / VB_IMAGES),),
        (str(folder / VB_IMAGES),),
        str(masks),
        "masks",
        "png masks",
        mapping=tuple(map(str, mapping)),
        mask_size=png_side(masks),
        notes=tuple(notes),
    )


def _iafoss(folder: Path, notes: list[str]) -> SiimLayout:
    if not (folder / "test").is_dir():
        raise LayoutError(f"{folder}: train/ and masks/ of PNGs but no test/ folder beside them")
    masks = folder / "masks"
    return SiimLayout(
        "iafoss",
        "png",
        (str(folder / "train"),),
        (str(folder / "test"),),
        str(masks),
        "masks",
        "png masks",
        mask_size=png_side(masks),
        notes=tuple(notes),
    )


def _choose(found: _Found, wanted: str, roots: list[Path], train_override: str) -> SiimLayout:
    kinds = found.kinds()
    notes: list[str] = []
    if wanted != "auto" and wanted not in kinds:
        raise LayoutError(
            f"data.siim.layout is {wanted!r}, but data.siim.root holds "
            + (f"the layout(s) {', '.join(kinds)}" if kinds else "no known layout")
            + f": {_listing(roots)}. Set data.siim.layout: auto, or point data.siim.root at the "
            f"{wanted} download"
        )
    if wanted == "auto":
        png = [kind for kind in kinds if kind in ("vbookshelf", "iafoss")]
        if png and len(kinds) > 1:
            raise LayoutError(
                f"data.siim.root holds several distributions ({', '.join(kinds)}): a PNG set is "
                "read alone; name the one to use in data.siim.layout, or give only its folder"
            )
        wanted = (
            png[0]
            if png
            else "competition"
            if "competition" in kinds
            else "mirror"
            if kinds
            else ""
        )
    if not wanted:
        raise _nothing_found(roots)
    for kind in ("vbookshelf", "iafoss"):
        if wanted == kind:
            places = getattr(found, kind)
            if len(places) > 1:
                raise LayoutError(
                    f"{len(places)} {kind} PNG sets ({', '.join(map(str, places))}); give the one "
                    "to use as data.siim.root"
                )
            return (_vbookshelf if kind == "vbookshelf" else _iafoss)(places[0], notes)
    if wanted == "competition":
        return _competition(found, notes, train_override)
    return _mirror(found, notes)


def _roots(value: object) -> list[Path]:
    if not value:
        return []
    return [Path(str(item)).expanduser() for item in ([value] if isinstance(value, str) else value)]


def _must_exist(path: str, key: str, is_dir: bool) -> None:
    ok = Path(path).is_dir() if is_dir else Path(path).is_file()
    if not ok:
        kind = "folder" if is_dir else "file"
        raise LayoutError(f"{key}: {path} is not a {kind}; fix the path in the config")


def resolve(siim: dict) -> SiimLayout:
    """The layout the config's ``data.siim`` section names: detected below ``root`` (or the
    ``layout`` named), then ``train_dicom_dir``, ``test_dicom_dir`` and ``train_rle_csv`` put in
    place of the parts they name. Raises LayoutError naming the folder or file and the fix.
    Reads folder listings and one label-file header, never an image."""
    roots = _roots(siim.get("root"))
    wanted = siim.get("layout") or "auto"
    overrides = {
        key: str(Path(siim[key]).expanduser()) if siim.get(key) else ""
        for key in ("train_dicom_dir", "test_dicom_dir", "train_rle_csv")
    }
    if wanted not in LAYOUTS:
        raise LayoutError(f"data.siim.layout is {wanted!r}; expected one of {', '.join(LAYOUTS)}")
    if not roots:
        empty = [f"data.siim.{key}" for key, value in overrides.items() if not value]
        if empty:
            raise LayoutError(
                "data.siim.root is empty, and so is "
                + ", ".join(empty)
                + ": give data.siim.root, the folder as downloaded (or a list of folders), or "
                "all three of train_dicom_dir, test_dicom_dir and train_rle_csv"
            )
        layout = SiimLayout.folders(
            overrides["train_dicom_dir"], overrides["test_dicom_dir"], overrides["train_rle_csv"]
        )
    else:
        for root in roots:
            if not root.is_dir():
                raise LayoutError(
                    f"data.siim.root: {root} is not a folder; give the folder the download was "
                    "unpacked into"
                )
        layout = _choose(_scan(roots), wanted, roots, overrides["train_dicom_dir"])
        layout = _override(layout, overrides)
    for key, path, is_dir in [
        *[("data.siim train folder", p, True) for p in layout.train],
        *[("data.siim test folder", p, True) for p in layout.test],
        ("data.siim labels", layout.labels, layout.label_kind == "masks"),
    ]:
        _must_exist(path, key, is_dir)
    return layout


def _override(layout: SiimLayout, overrides: dict[str, str]) -> SiimLayout:
    if not any(overrides.values()):
        return layout
    if layout.image_kind == "png":
        given = ", ".join(f"data.siim.{k}" for k, v in overrides.items() if v)
        raise LayoutError(
            f"{given} name DICOM folders or a label file, but data.siim.root is the {layout.name} "
            "PNG set: leave them empty, or drop data.siim.root"
        )
    changes: dict = {}
    if overrides["train_dicom_dir"]:
        changes["train"] = (overrides["train_dicom_dir"],)
    if overrides["test_dicom_dir"]:
        changes["test"] = (overrides["test_dicom_dir"],)
    if overrides["train_rle_csv"]:
        changes["labels"] = overrides["train_rle_csv"]
        changes["dialect"] = label_dialect(overrides["train_rle_csv"])
    named = ", ".join(f"data.siim.{k}" for k, v in overrides.items() if v)
    notes = (*layout.notes, f"{named} given: in place of the detected one(s)")
    return replace(layout, **changes, notes=notes)


def demo_layout(folder: str) -> SiimLayout:
    """The demo's SIIM set (rule demo_siim writes the mirror's layout there), before it exists."""
    return SiimLayout.folders(
        f"{folder}/{MIRROR_TRAIN}",
        f"{folder}/{MIRROR_TEST}",
        f"{folder}/{MIRROR_LABELS}",
        "mirror",
        "siim",
    )
