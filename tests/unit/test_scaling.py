"""Compound scaling of the U-Net: rounding rules, the scaling law in FLOPs, the grid, the summary."""

from __future__ import annotations

import functools
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn

from ptxseg.models.flops import flops_per_image, parameter_count
from ptxseg.models.grey import GreyInput
from ptxseg.models.scaled_unet.compound import (
    RESOLUTION_MULTIPLE,
    Candidate,
    Network,
    compound,
    find,
    network,
    round_filters,
    round_repeats,
    scaled_resolution,
    screen,
)
from ptxseg.models.scaled_unet.model import (
    BASE_DEPTHS,
    MIN_SIZE,
    SIZE_MULTIPLE,
    DecoderStage,
    ResidualBlock,
    ScaledUNet,
    build_scaled_unet,
    build_scaled_unet_b1,
    build_scaled_unet_b2,
)
from ptxseg.report.figures import plot_score_vs_flops
from ptxseg.report.scaling import COLUMNS, select_best, summarise

ROOT = Path(__file__).resolve().parents[2]

# Every convolution's FLOPs scale exactly with the area at any side that is a multiple of 32, so
# the law is measured at the smallest side, where a forward pass is quickest.
SIDE = 32


def _grey(net: nn.Module) -> GreyInput:
    return GreyInput(net, name="scaled_unet", kind="segmenter", size_multiple=SIZE_MULTIPLE)


@functools.cache
def _measure(depth=1.0, width=1.0, side=SIDE):
    net = build_scaled_unet(1, depth=depth, width=width)
    return parameter_count(net), flops_per_image(_grey(net), side)


# ----------------------------------------------------------------------------- rounding rules


def test_round_filters_is_efficientnets_rule():
    assert round_filters(16) == 16 and round_filters(3) == 8  # never below 8
    assert [round_filters(c, 1.1) for c in (16, 32, 64, 128, 256)] == [16, 32, 72, 144, 280]
    # 16 * 1.21 = 19.36 rounds to 16, more than 10% under: one step up instead
    assert round_filters(16, 1.21) == 24
    for channels in (8, 16, 24, 40, 112, 320):
        for width in (0.5, 1.0, 1.1, 1.21, 1.4, 2.0, 3.1):
            rounded, exact = round_filters(channels, width), channels * width
            assert rounded % 8 == 0 and rounded >= 8 and rounded >= 0.9 * exact
            assert abs(rounded - exact) <= 8
    with pytest.raises(ValueError, match="width must be a positive number"):
        round_filters(16, 0)


def test_round_repeats_rounds_up():
    assert [round_repeats(n, 1.2) for n in BASE_DEPTHS] == [2, 3, 3, 8, 6]
    assert [round_repeats(n, 2.0) for n in BASE_DEPTHS] == [2, 4, 4, 12, 10]
    assert round_repeats(2, 1.0000000000000002) == 2  # float noise does not add a block
    assert round_repeats(3, 0.1) == 1


def test_scaled_unet_channels_are_multiples_of_8_and_depths_rounded_up():
    depth, width = 1.3, 1.37
    net = build_scaled_unet(1, depth=depth, width=width)
    assert net.depths == tuple(math.ceil(n * depth) for n in BASE_DEPTHS)
    for stage, channels, blocks in zip(net.encoder, net.widths, net.depths, strict=True):
        assert sum(isinstance(m, ResidualBlock) for m in stage) == blocks
        assert all(b.conv2.out_channels == channels for b in stage if isinstance(b, ResidualBlock))
    decoder = [(len(s.blocks), s.fuse[0].out_channels) for s in net.decoder]
    assert decoder == list(zip(net.depths[:-1], net.widths[:-1], strict=True))[::-1]
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d) and m is not net.head]
    assert all(c.out_channels % 8 == 0 for c in convs)


# ----------------------------------------------------------------------------- the scaling law


@pytest.mark.parametrize(
    ("multipliers", "params_factor", "flops_factor"),
    [
        # Depth: the blocks double, the stem, the four strided transitions, the decoder's 1x1
        # fusions and the head do not. They are ~10% of B0's FLOPs, so d = 2 gives ~1.89.
        pytest.param({"depth": 2.0}, 2.0, 2.0, id="depth-x2"),
        # Width: every convolution's cost goes as c_in * c_out, except the stem (3 input
        # channels) and the head (1 output channel): ~3.99.
        pytest.param({"width": 2.0}, 4.0, 4.0, id="width-x2"),
        # Resolution: every convolution's cost goes as the side squared; parameters are fixed.
        pytest.param({"side": 2 * SIDE}, 1.0, 4.0, id="resolution-x2"),
    ],
)
def test_flops_and_parameters_follow_the_scaling_law(multipliers, params_factor, flops_factor):
    base_params, base_flops = _measure()
    params, flops = _measure(**multipliers)
    assert params / base_params == pytest.approx(params_factor, rel=0.15)
    assert flops / base_flops == pytest.approx(flops_factor, rel=0.15)


def test_flops_per_image_takes_grey_or_colour_models():
    torch.manual_seed(0)
    net = build_scaled_unet(1)
    net.train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    colour = flops_per_image(net, SIDE)  # 3 channels: the stem's own
    grey = flops_per_image(_grey(net), SIDE)  # 1 channel, repeated for free
    assert colour == grey == flops_per_image(net, (SIDE, SIDE), channels=3) > 0
    assert net.training  # mode restored, BatchNorm statistics untouched
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    # one 1x1 convolution: 2 FLOPs per multiply-add
    assert flops_per_image(nn.Conv2d(1, 4, 1, bias=False), 8) == 2 * 4 * 8 * 8
    assert parameter_count(nn.Conv2d(1, 4, 1)) == 8


# ----------------------------------------------------------------------------- the grid


GRID = {"alpha": [1.0, 1.2, 2.2, 2.6], "beta": [1.0, 1.1], "gamma": [0.9, 1.0, 1.15]}


def _nominal(net: Network) -> float:
    """A stand-in measurement: the nominal law on the rounded network (B0 at 256 px is 1)."""
    return sum(net.depths) / 16 * (net.widths[-1] / 256) ** 2 * (net.resolution / 256) ** 2


def test_candidates_meet_the_flops_constraint_and_the_rest_is_excluded():
    kept, left = screen(GRID, 256, _nominal, target=2.0, tolerance=0.1)
    assert len(kept) + len(left) == 4 * 2 * 3
    names = [c.name for c in kept]
    # 1.2 -> (2, 3, 3, 8, 6): 22 blocks of 16; 280 channels; 288 px: 1.375 * 1.196 * 1.266
    assert names == ["a1.20_b1.10_g1.15"]
    assert kept[0].flops_ratio == pytest.approx(22 / 16 * (280 / 256) ** 2 * (288 / 256) ** 2)
    assert kept[0].product == pytest.approx(1.2 * 1.1**2 * 1.15**2)
    reasons = {e.name: e.reason for e in left}
    assert reasons["a2.60_b1.00_g1.00"] == (
        "measured FLOPs 2.750 x B0 outside 2 ± 10% [1.800, 2.200] "
        "(nominal alpha*beta^2*gamma^2 = 2.600)"
    )
    # 2.2 -> (3, 5, 5, 14, 11): the nominal 2.2 is on the window's edge, the network is not
    assert reasons["a2.20_b1.00_g1.00"].startswith("measured FLOPs 2.375 x B0 outside")
    assert reasons["a2.60_b1.00_g0.90"] == "gamma < 1"
    assert reasons["a1.00_b1.00_g1.00"].startswith("measured FLOPs 1.000 x B0 outside")
    for point in kept:
        assert min(point.alpha, point.beta, point.gamma) >= 1
        assert abs(point.flops_ratio - 2) <= 0.2 + 1e-9
    only = screen(GRID, 256, _nominal, target=2.75, tolerance=0.01)[0]
    assert [c.name for c in only] == ["a2.60_b1.00_g1.00"]


def test_grid_points_of_one_network_are_merged_under_the_first():
    """At 256 px, gamma 1.1 and 1.15 both give 288 px: one job, the other point listed."""
    grid = {"alpha": [1.2], "beta": [1.1], "gamma": [1.1, 1.15]}
    kept, left = screen(grid, 256, _nominal, tolerance=0.2)
    assert kept == [Candidate(1.2, 1.1, 1.1)] and kept[0].merged == ("a1.20_b1.10_g1.15",)
    assert [(e.name, e.reason) for e in left] == [
        ("a1.20_b1.10_g1.15", "same network as a1.20_b1.10_g1.10")
    ]
    assert find("a1.20_b1.10_g1.10", kept) == (kept[0], 1)
    assert find("b0", kept) == (Candidate(1.0, 1.0, 1.0), 0)
    with pytest.raises(
        ValueError, match="'a1.20_b1.10_g1.15' is not a candidate .*a1.20_b1.10_g1.10"
    ):
        find("a1.20_b1.10_g1.15", kept)


def test_grid_errors_name_the_problem():
    def points(grid, **window):
        return screen(grid, 256, _nominal, **window)

    with pytest.raises(ValueError, match="missing gamma; unknown gama"):
        points({"alpha": [1.2], "beta": [1.1], "gama": [1.15]})
    with pytest.raises(ValueError, match=r"grid\.beta\[1\] must be a positive number"):
        points({"alpha": [1.2], "beta": [1.1, -1], "gamma": [1.15]})
    with pytest.raises(ValueError, match=r"tolerance must be in \[0, 1\)"):
        points(GRID, tolerance=1.5)
    with pytest.raises(ValueError, match="share the name 'a1.20_b1.10_g1.15'"):
        points({"alpha": [1.2, 1.201], "beta": [1.1], "gamma": [1.15]})


def test_compound_phi_0_1_2():
    assert compound(1.2, 1.1, 1.15, 0, 256) == (1.0, 1.0, 256)
    assert compound(1.2, 1.1, 1.15, 1, 256) == pytest.approx((1.2, 1.1, 288))  # 294.4 -> 288
    assert compound(1.2, 1.1, 1.15, 2, 256) == pytest.approx((1.44, 1.21, 352))  # 338.6 -> 352
    assert compound(1.2, 1.1, 1.15, 2, 512)[2] == 672
    assert Candidate(1.2, 1.1, 1.15).scaled(1, 512) == pytest.approx((1.2, 1.1, 576))
    assert scaled_resolution(40, 1.0, 0) == SIZE_MULTIPLE == MIN_SIZE == 32  # never below 32
    assert RESOLUTION_MULTIPLE == SIZE_MULTIPLE
    with pytest.raises(ValueError, match="phi must be a non-negative integer"):
        compound(1.2, 1.1, 1.15, 1.5, 256)


# ----------------------------------------------------------------------------- B0, B1, B2


def test_b1_b2_train_on_cpu_and_their_flops_grow():
    base = 64
    members = {"B0": build_scaled_unet(1), "B1": build_scaled_unet_b1(1)}
    members["B2"] = build_scaled_unet_b2(1)
    flops = {}
    for phi, (label, net) in enumerate(members.items()):
        torch.manual_seed(phi)
        model = _grey(net)
        x = torch.randn(2, 1, 32, 32)
        out = model(x)
        assert out.shape == (2, 1, 32, 32)
        out.pow(2).mean().backward()
        grads = [p.grad for p in model.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads), label
        assert model.net.stem[0].weight.grad.abs().sum() > 0, label
        flops[label] = flops_per_image(model, compound(1.2, 1.1, 1.15, phi, base)[2])
    assert flops["B0"] < flops["B1"] < flops["B2"]
    assert members["B1"].depths == (2, 3, 3, 8, 6) and members["B1"].widths[-1] == 280
    model = _grey(members["B2"]).eval()
    with torch.no_grad():
        assert model(torch.zeros(1, 1, MIN_SIZE, 3 * MIN_SIZE)).shape == (1, 1, 32, 96)
    with pytest.raises(RuntimeError, match="multiples of 32"):
        members["B0"](torch.zeros(1, 3, 48, 64))
    assert ScaledUNet(3, in_channels=1).eval()(torch.zeros(1, 1, 32, 32)).shape == (1, 3, 32, 32)


def test_decoder_mirrors_the_encoder():
    net = build_scaled_unet(2)
    assert [type(s) for s in net.decoder] == [DecoderStage] * 4
    assert [s.fuse[0].in_channels for s in net.decoder] == [256 + 128, 128 + 64, 64 + 32, 32 + 16]


# ----------------------------------------------------------------------------- results


def _rows():
    row = {"params": 1000, "flops": 10**9, "train_seconds": 60.0}
    return [
        {**row, "alpha": 1.0, "beta": 1.0, "gamma": 1.0, "phi": 0, "oof_score": 0.80},
        {**row, "alpha": 1.2, "beta": 1.1, "gamma": 1.15, "phi": 1, "oof_score": 0.83},
        {**row, "alpha": 1.4, "beta": 1.0, "gamma": 1.1, "phi": 1, "oof_score": 0.85},
        {**row, "alpha": 1.0, "beta": 1.2, "gamma": 1.2, "phi": 1, "oof_score": 0.82},
    ]


def test_summarise_picks_the_best_candidate_and_adds_b1_b2():
    calls = []

    def measure(net):
        calls.append(net)
        return 7, 8 * 10**9

    table = summarise(_rows(), base_resolution=256, measure=measure)
    assert list(table.columns[:2]) == ["label", "name"]
    assert set(COLUMNS) <= set(table.columns)
    assert select_best(table) == Candidate(1.4, 1.0, 1.1)
    labelled = table[table["label"] != ""].set_index("label")
    assert list(labelled.index) == ["B0", "B1", "B2"]
    assert labelled.loc["B1", "name"] == labelled.loc["B2", "name"] == "a1.40_b1.00_g1.10"
    assert labelled.loc["B1", "oof_score"] == 0.85 and not labelled.loc["B1", "planned"]
    b2 = labelled.loc["B2"]
    assert b2["phi"] == 2 and b2["planned"] and math.isnan(b2["oof_score"])
    assert (b2["params"], b2["flops"], b2["resolution"]) == (7, 8 * 10**9, 320)  # 309.76 -> 320
    assert calls == [network(1.4, 1.0, 1.1, 2, 256)]
    assert (b2["depths"], b2["widths"]) == ("2-4-4-12-10", "16-32-64-128-256")  # 1.96
    assert b2["nominal_flops_ratio"] == pytest.approx((1.4 * 1.1**2) ** 2)
    assert b2["flops_ratio"] == 8  # over B0's row
    assert len(table) == 5 and table["phi"].is_monotonic_increasing

    # a trained B2 row is labelled, not measured again
    trained = {**_rows()[2], "phi": 2, "oof_score": 0.86, "flops": 3 * 10**9}
    table = summarise([*_rows(), trained], base_resolution=256, measure=measure)
    assert len(calls) == 1 and len(table) == 5 and not table["planned"].any()
    assert table.set_index("label").loc["B2", "oof_score"] == 0.86

    with pytest.raises(ValueError, match="row 1 lacks oof_score"):
        summarise([_rows()[0], {k: v for k, v in _rows()[1].items() if k != "oof_score"}], 256)
    with pytest.raises(ValueError, match="no phi = 1 candidate has an OOF score"):
        summarise(_rows()[:1], 256)


def test_summarise_measures_the_scaled_unet_by_default(tmp_path):
    table = summarise(_rows(), base_resolution=64)
    b2 = table.set_index("label").loc["B2"]
    net = build_scaled_unet_b2(1, alpha=1.4, beta=1.0)
    assert b2["params"] == parameter_count(net)
    assert b2["flops"] == flops_per_image(net, int(b2["resolution"])) > 0
    path = plot_score_vs_flops(table, tmp_path / "plots" / "score_vs_flops.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (960, 660)
    assert [p.name for p in path.parent.iterdir()] == ["score_vs_flops.png"]  # no temporary left
    with pytest.raises(ValueError, match="nothing to plot"):
        plot_score_vs_flops(table.iloc[:0], tmp_path / "empty.png")
    assert not (tmp_path / "empty.png").exists()


def test_scaling_rules_import_without_torch():
    """A Snakefile can enumerate the grid at DAG build without loading torch or pandas."""
    code = (
        "import sys; from ptxseg.models.scaled_unet.compound import screen; "
        "screen({'alpha': [1.2], 'beta': [1.1], 'gamma': [1.15]}, 256, "
        "lambda n: sum(n.depths) * n.resolution ** 2); "
        "print(sorted({'torch', 'pandas', 'matplotlib'} & set(sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_registry_entries_when_registered():
    from ptxseg.models import MODELS, build_model

    names = ("scaled_unet", "scaled_unet_b1", "scaled_unet_b2")
    if not set(names) <= set(MODELS):
        pytest.skip("scaled_unet entries are not in the registry yet")
    from ptxseg.models.catalog import CATALOG

    for name in names:
        spec = MODELS[name]
        assert (spec.kind, spec.min_size, spec.size_multiple, spec.imagenet) == (
            "segmenter",
            MIN_SIZE,
            SIZE_MULTIPLE,
            None,
        )
        assert CATALOG[name] == ("segmenter", MIN_SIZE, SIZE_MULTIPLE)
    regularisation = {
        "activation": "relu",
        "classification_head": False,
        "drop_path_rate": None,
        "dropout_rate": None,
    }
    assert MODELS["scaled_unet"].options == {"depth": 1.0, "width": 1.0, **regularisation}
    assert MODELS["scaled_unet_b2"].options == {"alpha": 1.2, "beta": 1.1, **regularisation}
    model = build_model("scaled_unet", depth=1.2, width=1.1)
    assert model.net.depths == build_scaled_unet_b1(1).depths


def test_dropout_grows_with_phi_as_the_official_b0_to_b7_and_reaches_best_yaml(tmp_path):
    """The official efficientnet_builder's dropout, B0 0.2, B1 0.2, B2 0.3 ... B7 0.5, from the
    schema's default of scaling.dropout_by_phi; drop path stays 0.2 at every phi (its
    drop_connect_rate). From a config file to the candidates' settings and to best.yaml."""
    import yaml

    from ptxseg import config as cfg
    from ptxseg.report.scaling import best_fragment
    from ptxseg.runtime.options import Runtime
    from ptxseg.train.scaling_job import candidate_recipe, grown_rates
    from ptxseg.train.settings import FitSettings

    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump({"scaling": {"recipe": {"preset": "efficientnet"}}}))
    scaling = cfg.load(path)["scaling"]
    assert scaling["dropout_by_phi"] == [0.2, 0.2, 0.3, 0.3, 0.4, 0.4, 0.5, 0.5]
    settings = FitSettings.from_config(scaling["recipe"], 0, Runtime())
    _, b0 = candidate_recipe("b0", scaling, settings)
    _, at_phi1 = candidate_recipe("a1.20_b1.10_g1.10", scaling, settings)
    assert (b0.dropout_rate, b0.drop_path_rate) == (0.2, 0.2)
    assert (at_phi1.dropout_rate, at_phi1.drop_path_rate) == (0.2, 0.2)  # B1's: both 0.2
    rates = {"dropout_rate": 0.2, "drop_path_rate": 0.2}
    assert [grown_rates(rates, phi, scaling["dropout_by_phi"])["dropout_rate"] for phi in range(8)] == [
        0.2, 0.2, 0.3, 0.3, 0.4, 0.4, 0.5, 0.5
    ]  # fmt: skip
    assert grown_rates(rates, 7, scaling["dropout_by_phi"])["drop_path_rate"] == 0.2
    assert grown_rates({"dropout_rate": None}, 2, [0.2, 0.2, 0.3]) == {"dropout_rate": None}
    with pytest.raises(ValueError, match="dropout_by_phi has 3 entries, none for phi 3"):
        grown_rates(rates, 3, [0.2, 0.2, 0.3])
    table = summarise(_rows(), base_resolution=256, measure=lambda net: (7, 8 * 10**9))
    best = table[table["label"] == "B1"].iloc[0]
    keys = {"segment": {"size": 256, "archs": {}}}
    b0_recipe = {"dropout_rate": 0.2, "drop_path_rate": 0.2, "activation": "silu"}
    text = best_fragment(table, best, keys, b0_recipe, scaling["dropout_by_phi"])
    fragment = yaml.safe_load(text)
    b1_entry = fragment["segment"]["archs"]["scaled_unet_b1"]
    assert b1_entry["recipe"] == {"dropout_rate": 0.2, "drop_path_rate": 0.2, "activation": "silu"}
    assert '"dropout_rate": 0.3, "drop_path_rate": 0.2' in text  # B2's entry, in a comment
    cfg.validate(fragment)  # the fragment validates as it is


def test_dropout_by_phi_needs_an_entry_for_every_phi(tmp_path):
    import yaml

    from ptxseg import config as cfg

    path = tmp_path / "short.yaml"
    path.write_text(
        yaml.safe_dump({"scaling": {"phis": [1, 2, 3], "dropout_by_phi": [0.2, 0.2, 0.3]}})
    )
    with pytest.raises(
        cfg.ConfigError,
        match=r"'scaling.dropout_by_phi' has 3 entries \(phi 0 to 2\), but scaling.phis reaches 3",
    ):
        cfg.load(path)


def _best_yaml_over(config_path, rows):
    """best.yaml as the search writes it for ``rows`` and the config file, merged over that
    config the way Snakemake merges a second --configfile, and validated."""
    import yaml
    from snakemake.utils import update_config

    from ptxseg import config as cfg
    from ptxseg.recipes import resolution_keys
    from ptxseg.report.scaling import best_fragment

    config = cfg.load(config_path, cfg.load_schema())
    table = summarise(rows, base_resolution=256, measure=lambda net: (7, 8 * 10**9))
    best = table[table["label"] == "B1"].iloc[0]
    fragment = yaml.safe_load(best_fragment(table, best, resolution_keys(config)))
    merged = yaml.safe_load(Path(config_path).read_text())
    update_config(merged, fragment)
    return fragment, cfg.validate(merged, cfg.load_schema())


def test_best_yaml_validates_beside_the_full_config_and_keeps_its_stages():
    """full.yaml's 512 -> 1024 stages (512 crops) with gamma 1.15: 1024 x 1.15 = 1184 for the
    last stage, 608 (1184 / 2, to a multiple of 32) for the first and the crops."""
    row = {"params": 1000, "flops": 10**9, "train_seconds": 60.0}
    rows = [
        {**row, "alpha": 1.0, "beta": 1.0, "gamma": 1.0, "phi": 0, "oof_score": 0.80},
        {**row, "alpha": 1.2, "beta": 1.1, "gamma": 1.15, "phi": 1, "oof_score": 0.85},
        {**row, "alpha": 1.4, "beta": 1.0, "gamma": 1.1, "phi": 1, "oof_score": 0.83},
    ]
    fragment, merged = _best_yaml_over(ROOT / "configs" / "full.yaml", rows)
    segment = merged["segment"]
    assert segment["size"] == 1184 and "scaled_unet_b1" in segment["archs"]
    assert {"unet_resnet34", "attention_unet"} <= set(segment["archs"])  # the config's stay
    stages = segment["recipe"]["stages"]
    assert [s["size"] for s in stages] == [608, 1184]
    assert stages[1]["crop"] == {"size": 608, "positive_share": 0.6}
    assert [s["epochs"] for s in stages] == [30, 10] and stages[1]["freeze_encoder_epochs"] == 2
    second = merged["pseudo_labels"]["recipe"]["stages"]
    assert [s["size"] for s in second] == [1184] and second[0]["crop"]["size"] == 608
    assert set(fragment) == {"segment", "pseudo_labels"}


def test_best_yaml_without_stages_scales_the_config_size_not_the_search_size():
    """tiny.yaml (no stages, segment.size 32): B1's multiplier applies to 32, not to the
    search's base resolution, so the other segmenters are not retrained at B1's search side."""
    row = {"params": 1000, "flops": 10**9, "train_seconds": 60.0}
    rows = [
        {**row, "alpha": 1.0, "beta": 1.0, "gamma": 1.0, "phi": 0, "oof_score": 0.80},
        {**row, "alpha": 1.0, "beta": 1.0, "gamma": 2.0, "phi": 1, "oof_score": 0.85},
    ]
    fragment, merged = _best_yaml_over(ROOT / "configs" / "tiny.yaml", rows)
    assert merged["segment"]["size"] == 64 and "stages" not in fragment["segment"].get("recipe", {})
    assert set(merged["segment"]["archs"]) == {"unet_resnet34", "scaled_unet_b1"}
