"""Config validation: defaults, unknown keys and wrong types named, every shipped config valid."""

from __future__ import annotations

import pytest
import yaml
from dag import ROOT

from ptxseg import config as cfg

SCHEMA = cfg.load_schema()


def test_empty_config_takes_every_default():
    filled = cfg.validate({}, SCHEMA)
    assert filled["seed"] == 2019
    assert filled["data"]["source"] == "demo"
    assert filled["data"]["demo"]["image_size"] == 1024
    assert filled["repack"]["sizes"] == [256, 512, 1024]
    assert filled["folds"] == {"n_folds": 5, "group_by": "patient"}
    assert filled["resources"]["repack"]["threads"] == 8


def test_validate_does_not_modify_its_input():
    raw = {"folds": {"n_folds": 3}}
    cfg.validate(raw, SCHEMA)
    assert raw == {"folds": {"n_folds": 3}}


def test_unknown_key_is_named_with_a_suggestion():
    with pytest.raises(cfg.ConfigError) as error:
        cfg.validate({"repack": {"sizez": [64]}}, SCHEMA)
    message = str(error.value)
    assert "'repack.sizez' is unknown" in message and "did you mean 'sizes'" in message


def test_unknown_top_level_key():
    with pytest.raises(cfg.ConfigError, match="'sede' is unknown; did you mean 'seed'"):
        cfg.validate({"sede": 1}, SCHEMA)


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"seed": "one"}, "'seed'"),
        ({"repack": {"sizes": [64, "big"]}}, r"'repack.sizes\[1\]'"),
        ({"repack": {"sizes": [65]}}, r"'repack.sizes\[0\]'"),
        ({"repack": {"normalisation": "gamma"}}, "'repack.normalisation'"),
        ({"folds": {"n_folds": 1}}, "'folds.n_folds'"),
        ({"data": {"demo": {"positive_fraction": 1.5}}}, "'data.demo.positive_fraction'"),
        ({"resources": {"repack": {"threads": 0}}}, "'resources.repack.threads'"),
    ],
)
def test_wrong_type_or_value_names_the_key(raw, key):
    with pytest.raises(cfg.ConfigError, match=key):
        cfg.validate(raw, SCHEMA)


def test_the_removed_weight_step_says_where_the_grid_step_went():
    with pytest.raises(cfg.ConfigError) as error:
        cfg.validate({"ensemble": {"weight_step": 0.1}}, SCHEMA)
    assert "'ensemble.weight_step' is unknown; it moved to 'ensemble.blend.grid_step'" in str(
        error.value
    )
    with pytest.raises(cfg.ConfigError, match=r"'ensemble.blend.grid_step' is 0.3, which does not"):
        cfg.validate({"ensemble": {"blend": {"method": "exhaustive", "grid_step": 0.3}}}, SCHEMA)
    blend = cfg.validate({}, SCHEMA)["ensemble"]["blend"]
    assert blend == {
        "method": "greedy",
        "steps": 10,
        "sorted_init": 1,
        "grid_step": 0.1,
        "max_candidates": 10000,
    }
    from ptxseg.ensemble.blend import BlendSearch

    # The library's defaults are the schema's.
    assert BlendSearch.from_config(blend) == BlendSearch()


def test_every_fault_is_listed_at_once():
    with pytest.raises(cfg.ConfigError) as error:
        cfg.validate({"seed": "x", "folds": {"n_foldz": 3}}, SCHEMA)
    assert "'seed'" in str(error.value) and "'folds.n_foldz'" in str(error.value)


def test_files_source_needs_its_paths():
    with pytest.raises(cfg.ConfigError, match=r"data.siim.train_dicom_dir"):
        cfg.validate({"data": {"source": "files"}}, SCHEMA)


@pytest.mark.parametrize("name", ["config.yaml", "configs/full.yaml", "configs/tiny.yaml"])
def test_shipped_configs_are_valid(name):
    filled = cfg.load(ROOT / name, SCHEMA)
    assert filled["folds"]["n_folds"] >= 2


def test_full_config_is_the_real_recipe():
    full = cfg.load(ROOT / "configs" / "full.yaml", SCHEMA)
    assert full["data"]["source"] == "files"
    assert full["repack"]["sizes"] == [256, 512, 1024]
    assert full["folds"]["n_folds"] == 5
    # Ten gate sources: the exhaustive grid would refuse them, greedy selection does not.
    assert full["ensemble"]["blend"]["method"] == "greedy"


def test_load_names_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"folds": {"groupby": "patient"}}))
    with pytest.raises(cfg.ConfigError, match=r"(?s)bad.yaml: .*'folds.groupby' is unknown"):
        cfg.load(bad, SCHEMA)
    bad.write_text("- a list\n")
    with pytest.raises(cfg.ConfigError, match="mapping"):
        cfg.load(bad, SCHEMA)


def _walk(schema, path="config"):
    yield path, schema
    for name, sub in schema.get("properties", {}).items():
        yield from _walk(sub, f"{path}.{name}")


def test_every_schema_key_is_described_typed_and_defaulted():
    definitions = SCHEMA["$defs"]
    for path, node in _walk(SCHEMA):
        if "$ref" in node:
            target = definitions[node["$ref"].rsplit("/", 1)[1]]
            assert "default" in node, f"{path} has no default"
            for name, sub in target["properties"].items():
                assert sub.get("description"), f"{path}.{name} has no description"
            continue
        assert node.get("description"), f"{path} has no description"
        assert "type" in node or "enum" in node, f"{path} has no type"
        if path != "config":
            assert "default" in node, f"{path} has no default"
        if node.get("type") == "object" and "properties" in node:
            assert node.get("additionalProperties") is False, f"{path} accepts unknown keys"


def test_validating_the_full_config_does_not_import_torch():
    """The Snakefile validates at every DAG build; a torch import there costs seconds per run."""
    import subprocess
    import sys

    code = (
        "import sys, yaml\n"
        "from ptxseg import config as cfg\n"
        f"schema = cfg.load_schema()\n"
        f"cfg.validate(yaml.safe_load(open({str(ROOT / 'configs/full.yaml')!r})), schema)\n"
        "heavy = sorted({'torch', 'timm', 'segmentation_models_pytorch'} & set(sys.modules))\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


def test_more_snapshots_than_cosine_cycles_stops_at_validation():
    recipe = {
        "epochs": 8,
        "snapshots": 2,
        "schedule": {"name": "cosine_restarts", "warmup_epochs": 1, "cycle_epochs": 4},
    }
    raw = {"segment": {"archs": {"unet_resnet34": {}}, "recipe": recipe}}
    with pytest.raises(cfg.ConfigError) as error:
        cfg.validate(raw, SCHEMA)
    assert (
        "'segment.recipe.snapshots' (for unet_resnet34) asks for 2 snapshot(s), but the "
        "'cosine_restarts' schedule ends 1 cosine cycle(s) within 8 epochs (at epochs [5])"
    ) in str(error.value)
    recipe["schedule"]["warmup_epochs"] = 0  # cycles end at 4 and 8
    assert cfg.validate(raw, SCHEMA)["segment"]["recipe"]["snapshots"] == 2


def test_swa_starting_after_the_last_epoch_stops_at_validation():
    recipe = {"epochs": 4, "swa": {"enabled": True, "start_epoch": 5}}
    raw = {"classify": {"archs": {"densenet169": {}}, "recipe": recipe}}
    with pytest.raises(
        cfg.ConfigError, match=r"'classify.recipe.swa.start_epoch' \(for densenet169\) is 5"
    ):
        cfg.validate(raw, SCHEMA)
    recipe["swa"]["start_epoch"] = 4
    cfg.validate(raw, SCHEMA)


def test_key_order_of_the_config_file_does_not_matter():
    """Snakemake compares params in order: a reordered config must give identical sections."""
    config = yaml.safe_load((ROOT / "configs" / "tiny.yaml").read_text())

    def reversed_keys(value):
        if isinstance(value, dict):
            return {key: reversed_keys(value[key]) for key in reversed(list(value))}
        return value

    one, other = cfg.validate(config, SCHEMA), cfg.validate(reversed_keys(config), SCHEMA)
    assert list(config["segment"]["recipe"]) != list(reversed_keys(config)["segment"]["recipe"])
    for section in one:
        assert repr(one[section]) == repr(other[section]), section


def test_a_how_it_runs_key_in_its_old_section_says_where_it_moved():
    with pytest.raises(
        cfg.ConfigError,
        match=r"'train\.num_workers' is unknown; it moved to 'runtime\.num_workers'",
    ):
        cfg.validate({"train": {"num_workers": 2}}, SCHEMA)


def test_the_runtime_section_reaches_the_typed_settings():
    """The demo config's runtime keys, through the one constructor the rule scripts use."""
    from ptxseg.recipes import recipe_for
    from ptxseg.runtime.options import Runtime
    from ptxseg.train.settings import FitSettings

    config = cfg.load(ROOT / "config.yaml", SCHEMA)
    runtime = Runtime.from_config(config["runtime"], config["train"], threads=3)
    settings = FitSettings.from_config(recipe_for(config, "segment", "unet_resnet34"), 1, runtime)
    assert settings.runtime.checkpoint_every_s == config["runtime"]["checkpoint_every_s"] == 120
    assert (settings.runtime.num_workers, settings.runtime.threads) == (0, 3)
    assert settings.runtime.tta == tuple(config["train"]["tta"])
    # How it runs is not what a resumed run must share; the numerics are.
    other = Runtime.from_config({**config["runtime"], "num_workers": 7}, config["train"], 1)
    assert (
        FitSettings.from_config(
            recipe_for(config, "segment", "unet_resnet34"), 1, other
        ).fingerprint()
        == settings.fingerprint()
    )


def test_a_preset_fills_the_recipe_beneath_its_own_keys():
    from ptxseg import presets
    from ptxseg.runtime.options import Runtime
    from ptxseg.train.settings import FitSettings

    config = yaml.safe_load((ROOT / "configs" / "tiny.yaml").read_text())
    config["scaling"]["recipe"] = {"preset": "efficientnet", "epochs": 35, "batch_size": 32}
    config["segment"]["recipe"]["preset"] = "efficientnet"
    recipe = cfg.validate(config, SCHEMA)["scaling"]["recipe"]
    assert recipe["optimiser"]["name"] == "rmsprop_tf"
    assert recipe["optimiser"]["lr_per_256"] == 0.016  # a rule of the batch, resolved in settings
    assert FitSettings.from_config(recipe, 0, Runtime()).lr == pytest.approx(0.016 * 32 / 256)
    assert recipe["optimiser"]["rmsprop"] == {"decay": 0.9, "momentum": 0.9, "eps": 0.001}
    assert recipe["optimiser"]["weight_decay"] == 1e-5
    assert recipe["optimiser"]["decay_norm_and_bias"] is False
    assert recipe["grad_clip"] is None
    assert (
        recipe["schedule"].items()
        >= {
            "name": "exponential",
            "warmup_epochs": 5,
            "warmup_from": 0.0,
            "decay_factor": 0.97,
            "decay_epochs": 2.4,
            "staircase": True,
            "reference_epochs": 350,
        }.items()
    )
    assert (recipe["bn_momentum"], recipe["drop_path_rate"], recipe["dropout_rate"]) == (
        0.99,
        0.2,
        0.2,
    )
    assert recipe["ema"] == {"enabled": True, "decay": 0.9999, "warmup": True}
    # Keys the config writes win over the preset's (tiny's own optimiser rate and schedule): the
    # written rate drops the batch rule, the renamed schedule the exponential's epoch scale.
    segment = cfg.validate(config, SCHEMA)["segment"]["recipe"]
    assert segment["optimiser"]["lr"] == config["segment"]["recipe"]["optimiser"]["lr"]
    assert segment["optimiser"]["lr_per_256"] is None
    assert segment["schedule"]["name"] == config["segment"]["recipe"]["schedule"]["name"]
    assert segment["schedule"]["reference_epochs"] is None
    assert segment["optimiser"]["name"] == "rmsprop_tf" and segment["ema"]["enabled"]
    assert presets.expand({"epochs": 3}) == {"epochs": 3}


def test_reference_epochs_with_another_schedule_names_the_key():
    config = yaml.safe_load((ROOT / "configs" / "tiny.yaml").read_text())
    config["segment"]["recipe"]["schedule"]["reference_epochs"] = 350
    with pytest.raises(
        cfg.ConfigError,
        match=r"'segment.recipe.schedule.reference_epochs' \(for unet_resnet34\) applies to the "
        "exponential schedule only, not 'cosine_restarts'",
    ):
        cfg.validate(config, SCHEMA)


def test_an_unknown_preset_names_the_key():
    config = yaml.safe_load((ROOT / "configs" / "tiny.yaml").read_text())
    config["segment"]["recipe"]["preset"] = "efficientnett"
    with pytest.raises(
        cfg.ConfigError,
        match=r"segment\.recipe\.preset.*unknown recipe preset 'efficientnett'.*efficientnet",
    ):
        cfg.validate(config, SCHEMA)


def test_the_full_config_trains_the_scaling_search_with_the_preset():
    recipe = cfg.load(ROOT / "configs" / "full.yaml", SCHEMA)["scaling"]["recipe"]
    assert recipe["preset"] == "efficientnet" and recipe["optimiser"]["name"] == "rmsprop_tf"
    assert recipe["ema"]["enabled"] and recipe["schedule"]["name"] == "exponential"


def test_the_ema_member_can_enter_the_ensemble_only_where_the_recipe_keeps_it():
    config = yaml.safe_load((ROOT / "configs" / "tiny.yaml").read_text())
    config["ensemble"] = {"members": {"segment": ["best", "ema"]}}
    assert cfg.validate(config, SCHEMA)["ensemble"]["members"]["segment"] == ["best", "ema"]
    config["segment"]["recipe"]["ema"] = {"enabled": False}
    with pytest.raises(
        cfg.ConfigError, match="names 'ema', which the segment recipe does not keep"
    ):
        cfg.validate(config, SCHEMA)


def test_the_searches_name_a_segmenter_and_a_fold_of_the_config():
    config = yaml.safe_load((ROOT / "configs" / "tiny.yaml").read_text())
    config["augsearch"] = {"arch": "unet_resnet43", "fold": 2}
    config["scaling"]["fold"] = 5
    with pytest.raises(cfg.ConfigError) as error:
        cfg.validate(config, SCHEMA)
    message = str(error.value)
    assert (
        "'augsearch.arch' is 'unet_resnet43', which is not one of segment.archs (unet_resnet34)"
        in message
    )
    assert "'augsearch.fold' is 2, but folds.n_folds is 2" in message
    assert "'scaling.fold' is 5, but folds.n_folds is 2" in message


def _files(siim: dict) -> dict:
    return {"data": {"source": "files", "siim": siim, "nih": {"image_dir": "n", "labels_csv": "c"}}}


@pytest.mark.parametrize("root", ["/data/siim-acr", ["/data/kaggle", "/data/mirror"]])
def test_data_siim_root_alone_names_the_siim_download(root):
    validated = cfg.validate(_files({"root": root}), SCHEMA)
    assert validated["data"]["siim"]["root"] == root
    assert validated["data"]["siim"]["layout"] == "auto"


@pytest.mark.parametrize(
    ("siim", "message"),
    [
        ({}, "data.siim.train_dicom_dir, data.siim.train_rle_csv, data.siim.test_dicom_dir"),
        ({"root": []}, "data.siim.root"),
        ({"root": "x", "layout": "stage2"}, "data.siim.layout"),
    ],
)
def test_data_siim_without_root_or_keys_is_refused(siim, message):
    with pytest.raises(cfg.ConfigError, match=message):
        cfg.validate(_files(siim), SCHEMA)


def test_a_missing_root_is_a_config_error_naming_it(tmp_path):
    config = cfg.validate(_files({"root": str(tmp_path / "nowhere")}), SCHEMA)
    with pytest.raises(cfg.ConfigError, match=f"{tmp_path / 'nowhere'} is not a folder"):
        cfg.siim_layout(config)


def test_the_demo_layout_needs_no_folder():
    layout = cfg.siim_layout(cfg.validate({}, SCHEMA))
    assert layout.name == "mirror" and layout.labels.endswith("demo/siim/train-rle.csv")
