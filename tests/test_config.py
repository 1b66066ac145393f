"""Configs: the shipped YAML files match docs/method.md §6; overrides are typed; bad values name their key."""

from pathlib import Path

import pytest

from fastwsol.checkpoint import config_from_dict
from fastwsol.config import ConfigError, load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

# docs/method.md §6, CUB-200-2011.
PAPER_CUB = {
    "vgg16": dict(
        epochs=70, warm_epochs=20, batch_size=64, warm_batch_size=32, lr=0.004, new_layer_lr_multiplier=5,
        weight_decay=5e-4, lambda_sim=0.5, fg_threshold=0.6, bg_threshold=0.1, lambda_norm=0.15,
        lambda_drop=3.0, drop_threshold=0.8, drop_prob=0.5, feature="14x14",
    ),
    "resnet50": dict(
        epochs=70, warm_epochs=20, batch_size=32, warm_batch_size=32, lr=0.002, new_layer_lr_multiplier=10,
        weight_decay=1e-4, lambda_sim=0.5, fg_threshold=0.4, bg_threshold=0.2, lambda_norm=0.05,
        lambda_drop=2.0, drop_threshold=0.8, drop_prob=0.25, feature="28x28",
    ),
}


def assert_published_settings(config, published: dict, dataset: str) -> None:
    """The settings both the CUB and the ImageNet configs must carry from their published source."""
    assert config.model.name in ("vgg16", "resnet50") and config.data.dataset == dataset
    assert config.model.large_feature_map == (published["feature"] == "28x28")
    for key in ("epochs", "warm_epochs", "batch_size", "warm_batch_size", "lr", "new_layer_lr_multiplier", "weight_decay"):
        assert getattr(config.optim, key) == pytest.approx(published[key]), key
    for key in ("lambda_sim", "fg_threshold", "bg_threshold", "lambda_norm", "lambda_drop"):
        assert getattr(config.loss, key) == pytest.approx(published[key]), key
    assert (config.model.drop_threshold, config.model.drop_prob) == (published["drop_threshold"], published["drop_prob"])
    assert config.optim.momentum == 0.9 and config.optim.nesterov
    assert (config.data.resize_size, config.data.image_size) == (256, 224)


@pytest.mark.parametrize("backbone", ["vgg16", "resnet50"])
def test_cub_configs_match_the_method(backbone):
    config = load_config(CONFIGS / f"cub_{backbone}.yaml")
    assert config.model.name == backbone
    assert_published_settings(config, PAPER_CUB[backbone], "CUB")
    assert config.optim.lr_decay_epochs == [41, 61] and config.optim.lr_decay_factor == 0.2
    assert config.loss.fine_grained


# The authors' ImageNet settings (github.com/ejkim47/bridging-gap-wsol issue #1; docs/method.md §6);
# what they leave out is "as on CUB".
AUTHORS_ILSVRC = {
    "vgg16": dict(
        epochs=40, warm_epochs=5, batch_size=32, warm_batch_size=32, lr=0.00002, new_layer_lr_multiplier=5,
        lr_decay_epochs=[11, 31], weight_decay=5e-4, lambda_sim=0.5, fg_threshold=0.6, bg_threshold=0.1,
        lambda_norm=0.15, lambda_drop=3.0, drop_threshold=0.8, drop_prob=0.5, feature="14x14",
    ),
    "resnet50": dict(
        epochs=30, warm_epochs=14, batch_size=32, warm_batch_size=32, lr=0.00001, new_layer_lr_multiplier=10,
        lr_decay_epochs=[21, 31], weight_decay=1e-4, lambda_sim=8.0, fg_threshold=0.28, bg_threshold=0.25,
        lambda_norm=1.0, lambda_drop=2.0, drop_threshold=0.8, drop_prob=0.25, feature="28x28",
    ),
}


@pytest.mark.parametrize("backbone", ["vgg16", "resnet50"])
def test_ilsvrc_configs_match_the_authors(backbone):
    config = load_config(CONFIGS / f"ilsvrc_{backbone}.yaml")
    assert config.model.name == backbone
    assert_published_settings(config, AUTHORS_ILSVRC[backbone], "ILSVRC")
    authors = AUTHORS_ILSVRC[backbone]
    assert config.optim.lr_decay_epochs == authors["lr_decay_epochs"] and config.optim.lr_decay_factor == 0.1
    assert not config.loss.fine_grained


@pytest.mark.parametrize("name", ["cub_vgg16", "cub_vgg16_cam", "cub_resnet50", "cub_resnet50_cam"])
def test_cub_configs_read_the_builtin_metadata(name):
    assert load_config(CONFIGS / f"{name}.yaml").data.metadata_root == "builtin"


def test_every_shipped_config_loads():
    names = sorted(p.name for p in CONFIGS.glob("*.yaml"))
    assert {"cub_vgg16.yaml", "cub_resnet50.yaml", "ilsvrc_vgg16.yaml", "ilsvrc_resnet50.yaml"} <= set(names)
    for name in names:
        config = load_config(CONFIGS / name)
        if name.startswith("ilsvrc"):
            assert not config.loss.fine_grained  # ImageNet: target-class masks
        assert config.model.method == ("cam" if name.endswith("_cam.yaml") else "bridging_gap"), name


@pytest.mark.parametrize("backbone", ["vgg16", "resnet50"])
def test_cam_configs_extend_the_method_configs(backbone):
    """cub_<backbone>_cam.yaml is the method's file with model.method=cam (and its own out_dir)."""
    method, cam = (load_config(CONFIGS / f"cub_{backbone}{suffix}.yaml").to_dict() for suffix in ("", "_cam"))
    assert cam["model"].pop("method") == "cam" and method["model"].pop("method") == "bridging_gap"
    assert cam["train"].pop("out_dir") == f"runs/cub_{backbone}_cam" and method["train"].pop("out_dir") != f"runs/cub_{backbone}_cam"
    assert cam == method


def test_extends_overrides_key_by_key_and_names_a_missing_base(tmp_path):
    (tmp_path / "base.yaml").write_text("optim:\n  lr: 0.1\n  epochs: 5\n  warm_epochs: 1\n  lr_decay_epochs: []\nmodel:\n  name: vgg_small\n")
    (tmp_path / "child.yaml").write_text("extends: base.yaml\noptim:\n  epochs: 3\n")
    config = load_config(tmp_path / "child.yaml")
    assert (config.optim.lr, config.optim.epochs, config.model.name) == (0.1, 3, "vgg_small")
    (tmp_path / "orphan.yaml").write_text("extends: gone.yaml\n")
    with pytest.raises(FileNotFoundError, match=r"gone\.yaml.*extended by .*orphan\.yaml"):
        load_config(tmp_path / "orphan.yaml")
    (tmp_path / "loop.yaml").write_text("extends: loop.yaml\n")
    with pytest.raises(ConfigError, match="extends itself"):
        load_config(tmp_path / "loop.yaml")


def test_old_cam_model_names_are_refused_in_configs_and_mapped_in_checkpoints():
    with pytest.raises(ConfigError, match=r"model\.name: 'vgg16_cam'.*model\.method=cam"):
        load_config(None, ["model.name=vgg16_cam"])
    vanilla = {"model": {"name": "vgg16_cam"}, "loss": {"lambda_drop": 0.0, "lambda_sim": 0.0, "lambda_norm": 0.0}}
    config = config_from_dict(vanilla)
    assert (config.model.name, config.model.method) == ("vgg16", "cam")
    # a _cam model with λ_sim kept was the ablation row without L_drop, not vanilla CAM
    ablation = {"model": {"name": "vgg_small_cam"}, "loss": {"lambda_drop": 3.0, "lambda_sim": 0.5, "lambda_norm": 0.0}}
    config = config_from_dict(ablation)
    assert (config.model.name, config.model.method) == ("vgg_small", "bridging_gap")
    assert (config.loss.lambda_drop, config.loss.lambda_sim) == (0.0, 0.5)


def test_overrides_are_typed():
    config = load_config(
        None,
        ["optim.lr=0.01", "optim.lr_decay_epochs=[2, 3]", "model.pretrained=null", "model.large_feature_map=true",
         "train.compile=false", "optim.epochs=3", "optim.warm_epochs=1"],
    )
    assert config.optim.lr == 0.01 and config.optim.lr_decay_epochs == [2, 3]
    assert config.model.pretrained is None and config.model.large_feature_map is True
    assert config.train.compile is False and config.optim.epochs == 3


@pytest.mark.parametrize(
    "override, key",
    [
        ("optim.learning_rate=0.1", "optim.learning_rate"),
        ("optimizer.lr=0.1", "'optimizer'"),
        ("optim.lr=fast", "optim.lr"),
        ("optim.epochs=2.5", "optim.epochs"),
        ("train.compile=maybe", "train.compile"),
        ("loss.bg_threshold=0.7", "loss.bg_threshold"),  # τ_bg > τ_fg (0.6)
        ("model.drop_prob=1.5", "model.drop_prob"),
        ("optim.warm_epochs=100", "optim.warm_epochs"),
        ("eval.map=heat", "eval.map"),
        ("model.method=grad_cam", "model.method"),
        ("model.name=alexnet", "model.name"),
        ("data.loader=ffcv", "data.loader"),
        ("train.backend=cuda", "train.backend"),
        ("lr=0.1", "section.key=value"),
    ],
)
def test_bad_values_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.").replace("[", r"\[")):
        load_config(None, [override])


def test_pretrained_and_init_from_exclude_each_other():
    assert load_config(None, ["model.init_from=runs/pre/last.pt"]).model.init_from == "runs/pre/last.pt"
    with pytest.raises(ConfigError, match=r"model\.init_from"):
        load_config(None, ["model.pretrained=imagenet", "model.init_from=runs/pre/last.pt"])


def test_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  lr: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(bad)
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("optim:\n  lrr: 0.1\n")
    with pytest.raises(ConfigError, match=r"unknown.yaml: unknown key optim\.lrr"):
        load_config(unknown)


def test_shipped_configs_by_name(tmp_path, monkeypatch):
    from fastwsol.config import config_path

    assert config_path("cub_vgg16") == config_path("cub_vgg16.yaml") == (CONFIGS / "cub_vgg16.yaml").resolve()
    monkeypatch.chdir(tmp_path)  # away from the source tree: configs/<name>.yaml is the shipped one
    assert load_config("configs/ilsvrc_vgg16.yaml").optim.epochs == 40
    assert load_config("cub_resnet50").model.name == "resnet50"
    with pytest.raises(FileNotFoundError, match=r"no shipped config named 'cub_vgg19'.*cub_vgg16"):
        config_path("cub_vgg19")
    with pytest.raises(FileNotFoundError, match=r"'elsewhere/cub_vgg16.yaml' does not exist"):
        load_config("elsewhere/cub_vgg16.yaml")  # a path with another folder is never replaced


def test_each_choice_type_equals_the_list_of_the_module_that_acts_on_it():
    """config.py is a leaf: its Literal choice types are copies, checked here against their owners."""
    import typing

    from fastwsol import config, objective, ops
    from fastwsol.data.loader import LOADERS
    from fastwsol.method import MAP_KINDS
    from fastwsol.models import MODEL_NAMES

    owners = {
        config.ModelName: MODEL_NAMES,
        config.Method: objective.METHODS,
        config.Loader: LOADERS,
        config.Backend: ops.BACKENDS,
        config.MapKind: MAP_KINDS,
    }
    for literal, owned in owners.items():
        assert set(typing.get_args(literal)) == set(owned), (literal, owned)
    assert len(config.literal_choices()) == 7  # the five above, precision and select_metric


def test_every_select_metric_is_a_metric_the_run_records(tiny_checkpoint, tiny_openimages_run):
    """A box metric in a run on boxes, a mask metric (MASK_SELECT_METRICS) in a run on masks."""
    import json
    import typing

    from fastwsol.config import MASK_SELECT_METRICS, SelectMetric

    boxes = json.loads((tiny_checkpoint.parent / "test_metrics.json").read_text())
    masks = json.loads((tiny_openimages_run / "test_metrics.json").read_text())
    metrics = set(typing.get_args(SelectMetric))
    assert set(MASK_SELECT_METRICS) <= metrics
    assert metrics - set(MASK_SELECT_METRICS) <= set(boxes) and set(MASK_SELECT_METRICS) <= set(masks)


def test_an_unknown_choice_names_the_key_and_the_choices():
    with pytest.raises(ConfigError, match=r"data\.loader: 'fast' is not one of \('auto', 'dali', 'torch'\)"):
        load_config(None, ["data.loader=fast"])


SHIPPED = sorted(p.name for p in CONFIGS.glob("*.yaml"))


@pytest.mark.parametrize("name", SHIPPED)
@pytest.mark.parametrize("epochs", [1, 8])
def test_a_short_run_of_every_shipped_config_is_accepted(name, epochs, capsys):
    """--set optim.epochs=N alone: the config's schedule shrinks with it, each key named in a note."""
    full = load_config(CONFIGS / name)
    config = load_config(CONFIGS / name, [f"optim.epochs={epochs}"])
    o, note = config.optim, capsys.readouterr().err
    assert o.epochs == epochs and 0 <= o.warm_epochs <= epochs and 1 <= config.train.select_from_epoch <= epochs
    assert config.train.validate_every_epoch_from is None or 1 <= config.train.validate_every_epoch_from <= epochs
    assert all(2 <= e <= epochs for e in o.lr_decay_epochs)  # at least one epoch at the full rate
    for key, old, new in (("optim.warm_epochs", full.optim.warm_epochs, o.warm_epochs),
                          ("optim.lr_decay_epochs", full.optim.lr_decay_epochs, o.lr_decay_epochs),
                          ("train.select_from_epoch", full.train.select_from_epoch, config.train.select_from_epoch),
                          ("train.validate_every_epoch_from", full.train.validate_every_epoch_from,
                           config.train.validate_every_epoch_from)):
        assert (f"{key} {old} -> {new}" in note) == (old != new), (key, note)


def test_shortening_scales_the_schedule_to_the_same_fractions_and_keeps_what_was_given(capsys):
    config = load_config(CONFIGS / "cub_vgg16.yaml", ["optim.epochs=7"])  # a tenth of 70: warm 20 -> 2, decay 41, 61
    assert (config.optim.warm_epochs, config.optim.lr_decay_epochs) == (2, [5, 7])
    assert "optim.epochs 7 shortens the config's 70 epochs" in capsys.readouterr().err
    config = load_config(CONFIGS / "cub_vgg16.yaml", ["optim.warm_epochs=3", "optim.epochs=7"])
    assert (config.optim.warm_epochs, config.optim.lr_decay_epochs) == (3, [5, 7])  # given: kept
    assert "optim.warm_epochs" not in capsys.readouterr().err
    # a longer run, or the file's own epochs, leaves the schedule as the config has it
    assert load_config(CONFIGS / "synthetic.yaml", ["optim.epochs=16"]).train.select_from_epoch == 6
    assert load_config(CONFIGS / "synthetic.yaml", ["optim.epochs=12"]).optim.lr_decay_epochs == [9]
    assert "note" not in capsys.readouterr().err


@pytest.mark.parametrize(
    "given, fix",
    [
        ("optim.warm_epochs=5", "--set optim.warm_epochs=2"),
        ("optim.lr_decay_epochs=[3,5]", "--set 'optim.lr_decay_epochs=[]'"),
        ("train.select_from_epoch=4", "--set train.select_from_epoch=2"),
        ("train.validate_every_epoch_from=4", "--set train.validate_every_epoch_from=2"),
    ],
)
def test_a_given_schedule_key_that_does_not_fit_is_an_error_naming_the_set_that_fixes_it(given, fix):
    key = given.split("=")[0]
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as info:
        load_config(None, ["optim.epochs=2", given])
    assert fix in str(info.value)
    fixed = fix.removeprefix("--set ").strip("'")
    assert load_config(None, ["optim.epochs=2", given, fixed]).optim.epochs == 2


def test_train_device_is_checked():
    assert load_config(None, ["train.device=cuda:1"]).train.device == "cuda:1"
    with pytest.raises(ConfigError, match=r"train\.device: 'gpu' is not auto, cpu, cuda or cuda:N"):
        load_config(None, ["train.device=gpu"])
