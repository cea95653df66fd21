"""Blend weight searches (ensemble.blend): Caruana's greedy ensemble selection and the exhaustive
simplex grid, on objectives whose best blend is known, counting every score they ask for."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from ptxseg.ensemble.blend import (
    BlendSearch,
    exhaustive_search,
    greedy_selection,
    one_at_a_time,
    simplex_grid,
    simplex_size,
)


class Counted:
    """A batch objective that counts the candidates it scores and the batches it is asked for."""

    def __init__(self, score):
        self.score, self.evaluations, self.batches = score, 0, 0

    def __call__(self, candidates):
        self.batches += 1
        self.evaluations += len(candidates)
        return [self.score(w) for w in candidates]


def distance_to(target):
    target = np.asarray(target, dtype=np.float64)
    return lambda w: -float(np.sum((np.asarray(w) - target) ** 2))


def test_greedy_finds_a_blend_that_needs_a_member_more_than_once():
    """The best blend (0.5, 0.3, 0.2, 0, 0) is counts (5, 3, 2) of 10: only with replacement."""
    objective = Counted(distance_to([0.5, 0.3, 0.2, 0, 0]))
    result = greedy_selection(5, objective, steps=10)
    np.testing.assert_allclose(result.weights, [0.5, 0.3, 0.2, 0, 0])
    assert result.score == pytest.approx(0)


def test_greedy_keeps_the_dominant_source_alone():
    """Ten image-level sources, one of them the label seen through little noise, the others noise:
    the gate's AUC objective puts all the weight on that source, as the exhaustive grid does."""
    rng = np.random.default_rng(0)
    labels = rng.random(300) < 0.3
    matrix = rng.random((300, 10))
    matrix[:, 6] = labels + rng.normal(0, 0.05, 300)
    objective = Counted(lambda w: roc_auc_score(labels, matrix @ w))
    result = greedy_selection(10, objective, steps=10)
    assert result.weights.tolist() == [0, 0, 0, 0, 0, 0, 1.0, 0, 0, 0]
    assert result.score == pytest.approx(roc_auc_score(labels, matrix[:, 6]))
    small = exhaustive_search(3, one_at_a_time(lambda w: roc_auc_score(labels, matrix[:, 5:8] @ w)))
    assert small.weights.tolist() == [0, 1.0, 0]


@pytest.mark.parametrize("seed", range(5))
def test_weights_are_counts_over_a_prefix_and_never_below_the_best_single(seed):
    rng = np.random.default_rng(seed)
    target = rng.dirichlet(np.ones(6))
    noise = rng.normal(0, 0.02, (6,))  # a bumpy objective, as the step-shaped metric is
    objective = Counted(lambda w: distance_to(target)(w) + float(noise @ np.asarray(w) ** 2))
    result = greedy_selection(6, objective, steps=7)
    sizes = [k for k in range(1, 8) if np.allclose(result.weights * k, np.rint(result.weights * k))]
    assert sizes, f"{result.weights} is not counts / k for any k <= 7"
    assert result.weights.sum() == pytest.approx(1) and (result.weights >= 0).all()
    best_single = max(objective.score(w) for w in np.eye(6))
    assert result.score >= best_single
    assert result.score == pytest.approx(objective.score(result.weights))
    assert result.score == max(s for _, s in result.tried)  # the best blend of the whole path


@pytest.mark.parametrize(("n", "steps"), [(3, 10), (10, 10), (10, 25)])
def test_greedy_scores_steps_times_members(n, steps):
    """Linear in the number of members: a batch of n per step, steps batches in all; a blend met
    again (the same weights from proportional counts) is not scored again."""
    objective = Counted(distance_to(np.full(n, 1 / n)))
    result = greedy_selection(n, objective, steps=steps)
    assert result.evaluations == steps * n
    assert objective.evaluations == len({tuple(w) for w, _ in result.tried}) < steps * n
    assert objective.batches == steps


def test_greedy_scores_a_blend_met_again_without_a_pass():
    """A dominant member first alone, then added to itself: (2, 0) / 2 is (1, 0), scored at the
    first step; the second step's batch holds only the new blend."""
    objective = Counted(lambda w: float(w[0]))
    result = greedy_selection(2, objective, steps=3)
    assert [w for w, _ in result.tried] == [
        [1, 0],
        [0, 1],
        [1, 0],
        [0.5, 0.5],
        [1, 0],
        [2 / 3, 1 / 3],
    ]
    assert objective.evaluations == 4 and objective.batches == 3
    assert result.weights.tolist() == [1, 0] and result.score == 1


def test_sorted_initialisation_starts_from_the_best_singles():
    target = [0.4, 0.35, 0.25, 0, 0, 0]
    objective = Counted(distance_to(target))
    result = greedy_selection(6, objective, steps=8, sorted_init=3)
    # each single, then the three best together, then a batch of 6 for each of the 5 other steps
    assert result.evaluations == 6 + 1 + (8 - 3) * 6
    assert objective.evaluations == len({tuple(w) for w, _ in result.tried})
    assert result.tried[6][0] == pytest.approx([1 / 3, 1 / 3, 1 / 3, 0, 0, 0])
    assert result.score >= objective.score(np.array(result.tried[6][0]))


def test_ties_go_to_the_first_member_and_the_shorter_prefix():
    """Identical members: every blend scores the same, and the search returns the first alone."""
    objective = Counted(lambda w: 0.5)
    result = greedy_selection(4, objective, steps=5)
    assert result.weights.tolist() == [1.0, 0, 0, 0]
    assert BlendSearch(method="exhaustive").run(4, objective).weights.tolist() == [1.0, 0, 0, 0]


def test_searches_are_deterministic():
    rng = np.random.default_rng(3)
    table = rng.random((8, 40))
    score = lambda w: float(np.sin(table.T @ w).sum())  # noqa: E731
    runs = [greedy_selection(8, Counted(score), steps=12) for _ in range(2)]
    assert runs[0].weights.tolist() == runs[1].weights.tolist()
    assert runs[0].tried == runs[1].tried


def test_the_exhaustive_grid_refuses_what_it_cannot_enumerate():
    """Ten sources at 0.1: 92,378 points, over the default bound: refused before any score."""
    objective = Counted(lambda w: 0.0)
    assert simplex_size(10, 0.1) == 92_378
    with pytest.raises(ValueError, match=r"ensemble\.blend\.max_candidates \(10,000\)") as error:
        BlendSearch(method="exhaustive").run(10, objective)
    assert "92,378" in str(error.value) and "ensemble.blend.method 'greedy'" in str(error.value)
    assert objective.evaluations == 0
    result = BlendSearch(method="exhaustive", grid_step=0.5).run(10, objective)  # 55 points
    assert objective.evaluations == result.evaluations == 55


@pytest.mark.parametrize(("n", "step"), [(1, 0.1), (3, 0.1), (4, 0.25), (5, 0.2)])
def test_simplex_grid_is_the_filtered_product_in_its_order(n, step):
    """The same points in the same order (corners first) as the product the grid used to filter."""
    units = round(1 / step)
    points = [c for c in itertools.product(range(units + 1), repeat=n) if sum(c) == units]
    old = np.array(points, dtype=np.float64) / units
    corners = (old == 1).any(axis=1)
    np.testing.assert_array_equal(
        simplex_grid(n, step), np.concatenate([old[corners][::-1], old[~corners]])
    )
    assert simplex_size(n, step) == len(points)


def test_blend_search_from_config_names_wrong_values():
    assert BlendSearch.from_config({}) == BlendSearch()
    assert BlendSearch().method == "greedy"
    with pytest.raises(ValueError, match="ensemble.blend.method"):
        BlendSearch.from_config({"method": "annealing"})
    with pytest.raises(ValueError, match="must divide 1"):
        BlendSearch(method="exhaustive", grid_step=0.3).run(2, Counted(lambda w: 0.0))
