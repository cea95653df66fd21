"""Grid searches that say when they hit a wall.

A value chosen on the edge of its grid may only be the best of what was tried: the optimum can lie
past it. Such a choice is reported, naming the config key to widen, unless the edge is a natural
bound of the quantity (a probability of 0 or 1, an area of 0, a scaling multiplier of 1), past which
nothing can be searched. Blend weights live on a simplex whose edges (a weight of 0 or 1) are all
natural bounds, so they never warn; more ``ensemble.blend.steps`` (greedy) or a finer
``ensemble.blend.grid_step`` (exhaustive) refines them instead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def edge_warnings(
    chosen: Mapping[str, float],
    grids: Mapping[str, Sequence[float]],
    keys: Mapping[str, tuple[str, float | None, float | None]],
) -> list[str]:
    """One message per chosen value on an edge of its grid that is not a natural bound.

    ``keys``: name -> (config key, lower natural bound, upper natural bound); None: unbounded.
    Grids of one value were not searched and do not warn.
    """
    warnings = []
    for name, (key, low, high) in keys.items():
        values = sorted(set(map(float, grids[name])))
        if len(values) < 2 or name not in chosen:
            continue
        value = float(chosen[name])
        if value == values[-1] and (high is None or value < high):
            warnings.append(
                f"{key}: the chosen {name} {value:g} is the largest value of its grid "
                f"{_listed(values)}; the best may lie above it: widen {key}"
            )
        elif value == values[0] and (low is None or value > low):
            warnings.append(
                f"{key}: the chosen {name} {value:g} is the smallest value of its grid "
                f"{_listed(values)}; the best may lie below it: widen {key}"
            )
    return warnings


def _listed(values: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:g}" for v in values) + "]"
