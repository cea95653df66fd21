"""Loading weights into built models, never from the network.

Two sources:

- **ImageNet**: the official file of the library that defines the architecture, found by its exact
  file name in ``weights_dir`` or torch's hub cache. Training machines are often offline, and a
  library's own loader would try to download (and retry) first; here a missing file fails at once
  with a message saying what to fetch and where to put it.
- **Checkpoints** of this project's training loop (the full grey-input model's state dict, bare or
  under ``"model"``), e.g. an NIH-pretrained classifier seeding a pneumothorax classifier. Tensors
  whose shapes differ (the 14-logit NIH head) are skipped with a warning; any other mismatch is an
  error naming the keys.

Every file is read with ``weights_only=True``: a checkpoint carrying pickled Python objects is
refused, as unpickling it could run arbitrary code.
"""

from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)

StateDict = dict[str, torch.Tensor]


class WeightsNotFoundError(FileNotFoundError):
    """A weight file is missing; the message names the file, the folders searched and the URL."""


class CheckpointError(ValueError):
    """A weight or checkpoint file cannot be used: unreadable, pickled objects, or keys that do not
    fit. The one class for it: `ptxseg.runtime.checkpoint` raises it too."""


@dataclass(frozen=True)
class ImagenetWeights:
    """Where an architecture's ImageNet weights come from and where they go.

    ``submodule`` is the path inside the architecture (``build_model(...).net``) that the file's
    keys belong to: the classifier backbone (without its ImageNet head) or the U-Net encoder.
    """

    file_name: str  # the official file name, as the library's download would cache it
    url: str  # where the library downloads it from
    submodule: str  # "backbone" (classifiers) or "encoder" (segmenters)
    source: str  # the library that defines the file, for messages
    head: tuple[str, ...] = ()  # key prefixes of the ImageNet head, dropped before loading
    fix_keys: Callable[[StateDict], StateDict] | None = None  # the library's own key fixes
    mirrors: tuple[str, ...] = ()  # other addresses serving the same file


def imagenet_search_dirs(weights_dir: str | os.PathLike | None = None) -> list[Path]:
    """The folders searched for ImageNet files, in order: ``weights_dir``, then torch's hub cache."""
    dirs = [Path(weights_dir)] if weights_dir else []
    # torch.hub.get_dir() honours TORCH_HOME; the library downloaders cache into its checkpoints/.
    dirs.append(Path(torch.hub.get_dir()) / "checkpoints")
    return dirs


def find_imagenet_file(
    weights: ImagenetWeights, weights_dir: str | os.PathLike | None = None, model: str = ""
) -> Path:
    """The path of ``weights``' file in the search folders; `WeightsNotFoundError` when absent.

    ``model`` names the model in the message. Only looks at the file system: no download, no
    retry, so it answers in milliseconds. (By a model's name: `registry.imagenet_weight_file`.)
    """
    dirs = imagenet_search_dirs(weights_dir)
    for folder in dirs:
        candidate = folder / weights.file_name
        if candidate.is_file():
            return candidate
    what = f"model {model!r}" if model else weights.source
    urls = " or ".join((weights.url, *weights.mirrors))
    raise WeightsNotFoundError(
        f"ImageNet weights for {what} not found: no file {weights.file_name!r} in "
        f"{', '.join(str(d) for d in dirs)}. Nothing is downloaded here: fetch it from {urls} "
        f"({weights.source}) and put it in {dirs[-1]}, or set models.weights_dir in the config to "
        f"the folder that holds it."
    )


def read_state_dict(path: str | os.PathLike, mmap: bool = False) -> StateDict:
    """A state dict from ``path``: bare, or under ``"model"`` / ``"state_dict"``; tensors only.
    ``mmap``: the tensors stay in the file's pages, read as they are used (`fit_state`)."""
    return state_dict_of(read_file(path, mmap), path)


def read_file(path: str | os.PathLike, mmap: bool = False) -> object:
    """What ``path`` holds, read with ``weights_only=True`` (and memory-mapped with ``mmap``)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsNotFoundError(
            f"checkpoint {str(path)!r} not found; weights must be 'none', 'imagenet' or the path "
            f"of a .pt/.pth checkpoint"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise CheckpointError(
            f"refusing to load {path}: it holds pickled Python objects, not only tensors "
            f"(read with weights_only=True). Save only state dicts of tensors. ({first_line})"
        ) from error
    except Exception as error:
        raise CheckpointError(f"cannot read checkpoint {path}: {error}") from error


def state_dict_of(obj: object, path: str | os.PathLike) -> StateDict:
    """The state dict in a file's contents ``obj``: bare, or under ``"model"`` / ``"state_dict"``."""
    for key in ("model", "state_dict"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state dict")
    bad = [str(k) for k, v in obj.items() if not isinstance(k, str) or not torch.is_tensor(v)]
    if bad:
        raise CheckpointError(f"{path} is not a state dict of tensors: {_names(bad)}")
    return dict(obj)


def load_imagenet_weights(
    net: nn.Module, weights: ImagenetWeights, path: str | os.PathLike
) -> None:
    """Load an official ImageNet file into ``net.<weights.submodule>``, its head dropped.

    Strict apart from the head: a key missing on either side means the file is not the one this
    architecture expects (or a library changed its layout), which must not pass silently.
    """
    state = read_state_dict(path)
    if weights.fix_keys is not None:
        state = weights.fix_keys(state)
    state = {k: v for k, v in state.items() if not k.startswith(weights.head)}
    target = net.get_submodule(weights.submodule)
    shapes = {k: v.shape for k, v in target.state_dict().items()}
    wrong = [k for k, v in state.items() if k in shapes and v.shape != shapes[k]]
    if wrong:
        raise CheckpointError(
            f"{path} does not fit {weights.submodule!r}: shapes differ for {_names(wrong)}"
        )
    # nn.Module's own method: smp encoders override load_state_dict (to drop their head) and
    # return nothing, and we need the missing/unexpected keys.
    result = nn.Module.load_state_dict(target, state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"{path} does not fit {weights.submodule!r}: missing keys {_names(result.missing_keys)}; "
            f"unexpected keys {_names(result.unexpected_keys)}"
        )
    log.info("loaded ImageNet weights %s into %s", path, weights.submodule)


def load_checkpoint_weights(model: nn.Module, path: str | os.PathLike) -> list[str]:
    """Load a checkpoint of the full model; returns the keys skipped because their shapes differ.

    Shape-mismatched tensors keep their fresh initialisation (a 14-logit NIH head in a 1-logit
    model); a key missing from the file or unknown to the model is an error naming it.
    """
    state = _strip_wrapper_prefix(read_state_dict(path), model.state_dict())
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {path} does not fit the model: missing keys {_names(missing)}; "
            f"unexpected keys {_names(unexpected)}"
        )
    skipped = [k for k, v in state.items() if v.shape != own[k].shape]
    if skipped:
        log.warning(
            "checkpoint %s: %d tensor(s) left freshly initialised because their shapes differ: %s",
            path,
            len(skipped),
            ", ".join(f"{k} {tuple(state[k].shape)} -> {tuple(own[k].shape)}" for k in skipped),
        )
    model.load_state_dict({k: v for k, v in state.items() if k not in skipped}, strict=False)
    log.info("loaded checkpoint %s (%d tensors)", path, len(state) - len(skipped))
    return skipped


def fit_state(
    own: Mapping[str, torch.Tensor], state: StateDict, path: str | os.PathLike
) -> StateDict:
    """``state``, a checkpoint of exactly the model whose state dict is ``own`` (its meta tensors
    will do: only shapes, strides and dtypes are read), ready to be assigned: every key and shape
    must fit (a CheckpointError names those that do not). The tensors are taken as they are (no
    copy; a memory-mapped file's pages are read as the model runs), unless one's layout or dtype
    differs from the model's own: then all are copied into the model's, as ``load_state_dict``
    would."""
    state = _strip_wrapper_prefix(state, own)
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"checkpoint {path} does not fit the model: missing keys {_names(missing)}; "
            f"unexpected keys {_names(unexpected)}; shapes differ for {_names(wrong)}"
        )
    fits = all(
        state[k].dtype == v.dtype and state[k].stride() == v.stride() for k, v in own.items()
    )
    if not fits:
        # Saved channels-last or in another precision: copied into the model's own layout, as
        # load_state_dict copies, since a layout changes a convolution's float sums. All of them:
        # one tensor left in a memory-mapped file keeps the whole file mapped, copied pages too.
        return {
            k: torch.empty_strided(v.shape, v.stride(), dtype=v.dtype).copy_(state[k])
            for k, v in own.items()
        }
    return {k: state[k] for k in own}


def assign_state(model: nn.Module, fitted: StateDict, path: str | os.PathLike) -> None:
    """Put ``fitted`` (`fit_state`'s) into ``model`` as they are (``assign``: no copy), in place
    of the tensors it holds, meta or another checkpoint's."""
    model.load_state_dict(fitted, strict=True, assign=True)
    left = [n for n, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta]
    if left:  # a buffer outside the state dict: only a real build would give it a value
        raise CheckpointError(
            f"{path}: the model keeps tensors no checkpoint holds: {_names(left)}"
        )
    log.debug("loaded checkpoint %s (%d tensors)", path, len(fitted))


def _strip_wrapper_prefix(state: StateDict, own: Mapping[str, torch.Tensor]) -> StateDict:
    # A state dict taken from a torch.compile'd or DataParallel model has every key prefixed
    # ('_orig_mod.', 'module.'); the weights are the same, so accept them.
    for prefix in ("_orig_mod.", "module."):
        if (
            state
            and all(k.startswith(prefix) for k in state)
            and not any(k.startswith(prefix) for k in own)
        ):
            state = {k.removeprefix(prefix): v for k, v in state.items()}
    return state


def _names(keys: list[str], limit: int = 12) -> str:
    if not keys:
        return "none"
    shown = ", ".join(keys[:limit])
    return shown if len(keys) <= limit else f"{shown} ... ({len(keys)} in all)"
