"""The shipped configs against the authors' published configs (github.com/ejkim47/bridging-gap-wsol,
configs/*.yaml), value by value, and the validation epochs their code's rule gives."""

import json
from pathlib import Path

import pytest

from fastwsol.checkpoint import changed_keys, config_from_dict
from fastwsol.config import ExperimentConfig, load_config
from fastwsol.io import load_checkpoint
from fastwsol.train import Trainer, describe_plan, validates

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

# The authors' published configs, as they stand in their repository (file -> key -> value).
AUTHORS_CONFIGS = {
    "config_exp.yaml": dict(  # CUB, ResNet50
        dataset_name="CUB", architecture="resnet50", epochs=70, warm_epochs=20, pretrained=True, eval_interval=5,
        cam_curve_interval=0.005, resize_size=256, crop_size=224, multi_contour_eval=True,
        iou_threshold_list=[30, 50, 70], warm_batch_size=32, batch_size=32, lr=0.002, lr_decay_points=[41, 61],
        lr_classifier_ratio=10.0, momentum=0.9, weight_decay=0.0001, large_feature_map=True, lr_decay_rate=0.2,
        loss_ratio_sim=0.5, sim_fg_thres=0.4, sim_bg_thres=0.2, loss_ratio_norm=0.05, loss_ratio_drop=2.0,
        drop_threshold=0.8, drop_prob=0.25,
    ),
    "config_exp_vgg.yaml": dict(  # CUB, VGG16
        dataset_name="CUB", architecture="vgg16", epochs=70, warm_epochs=20, pretrained=True, eval_interval=1,
        cam_curve_interval=0.005, resize_size=256, crop_size=224, multi_contour_eval=True,
        iou_threshold_list=[30, 50, 70], warm_batch_size=32, batch_size=64, lr=0.004, lr_decay_points=[41, 61],
        lr_classifier_ratio=5.0, momentum=0.9, weight_decay=0.0005, large_feature_map=False, lr_decay_rate=0.2,
        loss_ratio_sim=0.5, sim_fg_thres=0.6, sim_bg_thres=0.1, loss_ratio_norm=0.15, loss_ratio_drop=3.0,
        drop_threshold=0.8, drop_prob=0.5,
    ),
}
SHIPPED_FROM = {
    "cub_resnet50.yaml": "config_exp.yaml",
    "cub_resnet50_cam.yaml": "config_exp.yaml",
    "cub_vgg16.yaml": "config_exp_vgg.yaml",
    "cub_vgg16_cam.yaml": "config_exp_vgg.yaml",
}
# their key -> (our key, how their value reads as ours)
KEY_MAP = {
    "dataset_name": ("data.dataset", None),
    "architecture": ("model.name", None),
    "pretrained": ("model.pretrained", lambda v: "imagenet" if v else None),
    "epochs": ("optim.epochs", None),
    "warm_epochs": ("optim.warm_epochs", None),
    "warm_batch_size": ("optim.warm_batch_size", None),
    "batch_size": ("optim.batch_size", None),
    "lr": ("optim.lr", None),
    "lr_decay_points": ("optim.lr_decay_epochs", None),
    "lr_classifier_ratio": ("optim.new_layer_lr_multiplier", None),
    "momentum": ("optim.momentum", None),
    "weight_decay": ("optim.weight_decay", None),
    "lr_decay_rate": ("optim.lr_decay_factor", None),
    "large_feature_map": ("model.large_feature_map", None),
    "loss_ratio_sim": ("loss.lambda_sim", None),
    "loss_ratio_norm": ("loss.lambda_norm", None),
    "loss_ratio_drop": ("loss.lambda_drop", None),
    "sim_fg_thres": ("loss.fg_threshold", None),
    "sim_bg_thres": ("loss.bg_threshold", None),
    "drop_threshold": ("model.drop_threshold", None),
    "drop_prob": ("model.drop_prob", None),
    "resize_size": ("data.resize_size", None),
    "crop_size": ("data.image_size", None),
    "cam_curve_interval": ("eval.cam_curve_interval", None),
    "iou_threshold_list": ("eval.iou_thresholds", None),
    "multi_contour_eval": ("eval.multi_contour", None),
    "eval_interval": ("train.eval_interval", None),
    # their code validates every epoch from the first learning-rate decay on
    "lr_decay_points[0]": ("train.validate_every_epoch_from", None),
}


def ours(config: ExperimentConfig, dotted: str):
    section, key = dotted.split(".")
    return getattr(getattr(config, section), key)


def authors_value(published: dict, key: str):
    return published["lr_decay_points"][0] if key == "lr_decay_points[0]" else published[key]


def authors_validated_epochs(epochs: int, eval_interval: int, lr_decay_points: list[int]) -> list[int]:
    """Their main.py's rule, 1-based: every eval_interval-th epoch and every one from the first decay."""
    return [e for e in range(1, epochs + 1) if e % eval_interval == 0 or e >= lr_decay_points[0]]


@pytest.mark.parametrize("shipped", sorted(SHIPPED_FROM))
def test_each_cub_config_holds_the_authors_published_values(shipped):
    config = load_config(CONFIGS / shipped)
    published = AUTHORS_CONFIGS[SHIPPED_FROM[shipped]]
    assert set(KEY_MAP) - {"lr_decay_points[0]"} <= set(published)  # the table maps every key it names
    for theirs, (dotted, convert) in KEY_MAP.items():
        expected = authors_value(published, theirs)
        expected = convert(expected) if convert else expected
        assert ours(config, dotted) == pytest.approx(expected), f"{shipped} {dotted} vs {SHIPPED_FROM[shipped]} {theirs}"
    assert config.optim.nesterov  # their SGD: nesterov=True in trainer.py


@pytest.mark.parametrize("shipped", sorted(SHIPPED_FROM))
def test_each_cub_config_validates_on_the_authors_epochs(shipped):
    config = load_config(CONFIGS / shipped)
    published = AUTHORS_CONFIGS[SHIPPED_FROM[shipped]]
    expected = authors_validated_epochs(published["epochs"], published["eval_interval"], published["lr_decay_points"])
    assert [e for e in range(1, config.optim.epochs + 1) if validates(e, config)] == expected


@pytest.mark.parametrize("backbone, authors_file", [("resnet50", "config_exp.yaml"), ("vgg16", "config_exp_vgg.yaml")])
def test_imagenet_configs_validate_by_the_authors_rule(backbone, authors_file):
    """No ImageNet config is published: their rule gives every epoch from the config's own first
    decay epoch, at the interval of their CUB file for the same backbone."""
    config = load_config(CONFIGS / f"ilsvrc_{backbone}.yaml")
    eval_interval = AUTHORS_CONFIGS[authors_file]["eval_interval"]
    assert config.train.eval_interval == eval_interval
    assert config.train.validate_every_epoch_from == config.optim.lr_decay_epochs[0] == {"resnet50": 21, "vgg16": 11}[backbone]
    expected = authors_validated_epochs(config.optim.epochs, eval_interval, config.optim.lr_decay_epochs)
    assert [e for e in range(1, config.optim.epochs + 1) if validates(e, config)] == expected


def test_imagenet_vgg16_takes_cub_vgg16s_unpublished_weights_and_thresholds():
    imagenet, cub = (load_config(CONFIGS / name) for name in ("ilsvrc_vgg16.yaml", "cub_vgg16.yaml"))
    for dotted in ("loss.lambda_sim", "loss.lambda_norm", "loss.lambda_drop", "loss.fg_threshold", "loss.bg_threshold",
                   "model.drop_threshold", "model.drop_prob", "optim.weight_decay"):
        assert ours(imagenet, dotted) == ours(cub, dotted), dotted
    text = (CONFIGS / "ilsvrc_vgg16.yaml").read_text()
    assert "NOT PUBLISHED" in text and text.count("not published for ImageNet; CUB VGG16's") == 8


def test_only_imagenet_resnet50_keeps_the_pretrained_classifier():
    """The authors' wsol/resnet.py keeps torchvision's fc for ILSVRC only; VGG16-GAP's is always new."""
    keeps = {p.name for p in CONFIGS.glob("*.yaml") if load_config(p).model.keep_pretrained_classifier}
    assert keeps == {"ilsvrc_resnet50.yaml"}


def test_synthetic_configs_keep_their_own_validation():
    assert (load_config(CONFIGS / "synthetic.yaml").train.eval_interval,
            load_config(CONFIGS / "synthetic.yaml").train.validate_every_epoch_from) == (1, None)
    assert load_config(CONFIGS / "synthetic_pretrain.yaml").train.validate_every_epoch_from is None


def test_validates_is_the_interval_the_last_epoch_and_every_epoch_from_the_key():
    def epochs(*overrides):
        config = load_config(None, ["optim.epochs=12", "optim.lr_decay_epochs=[]", *overrides])
        return [e for e in range(1, 13) if validates(e, config)]

    assert epochs("train.eval_interval=5") == [5, 10, 12]  # the last epoch as before
    assert epochs("train.eval_interval=5", "train.validate_every_epoch_from=9") == [5, 9, 10, 11, 12]
    assert epochs("train.eval_interval=0", "train.validate_every_epoch_from=11") == [11, 12]
    assert epochs("train.eval_interval=0") == []


def test_a_shortened_run_scales_the_first_every_epoch_validation_with_the_decay(capsys):
    config = load_config(CONFIGS / "cub_resnet50.yaml", ["optim.epochs=7"])
    assert config.train.validate_every_epoch_from == config.optim.lr_decay_epochs[0] == 5
    assert "train.validate_every_epoch_from 41 -> 5" in capsys.readouterr().err
    given = load_config(CONFIGS / "cub_resnet50.yaml", ["optim.epochs=7", "train.validate_every_epoch_from=3"])
    assert given.train.validate_every_epoch_from == 3


@pytest.mark.parametrize("value", [0, 3])
def test_validate_every_epoch_from_outside_the_run_names_the_key(value):
    with pytest.raises(ValueError, match=r"train\.validate_every_epoch_from: must be null or lie in \[1, optim\.epochs = 2\]"):
        load_config(None, ["optim.epochs=2", "optim.lr_decay_epochs=[]", f"train.validate_every_epoch_from={value}"])


def test_a_config_recorded_before_the_new_keys_is_the_same_run():
    """Older checkpoints' configs lack both keys: they load, and count as the defaults (their behaviour)."""
    current = load_config(CONFIGS / "synthetic.yaml").to_dict()
    recorded = json.loads(json.dumps(current))
    del recorded["model"]["keep_pretrained_classifier"], recorded["train"]["validate_every_epoch_from"]
    assert changed_keys(recorded, current) == {}
    assert config_from_dict(recorded).to_dict() == current
    recorded["train"]["eval_interval"] = 2
    assert changed_keys(recorded, current) == {"train.eval_interval": (2, 1)}
    keep = load_config(None, ["model.name=resnet50", "model.pretrained=imagenet", "model.keep_pretrained_classifier=true"])
    assert changed_keys(recorded, keep.to_dict())["model.keep_pretrained_classifier"] == (False, True)


def test_training_validates_exactly_on_the_authors_epochs(tiny_run_overrides, tmp_path):
    """A tiny run with the authors' rule (every 2nd epoch, every epoch from the decay at 6): only
    those epochs are validated, and best.pt comes from one of them (from select_from_epoch on)."""
    out_dir = tmp_path / "run"
    config = load_config(None, tiny_run_overrides(
        out_dir, "optim.epochs=7", "optim.lr_decay_epochs=[6]", "train.eval_interval=2",
        "train.validate_every_epoch_from=6", "train.select_from_epoch=3", "train.max_steps_per_epoch=1"))
    trainer = Trainer(config)
    evaluate = trainer.evaluate

    def falling(split):  # the earliest selectable validated epoch wins
        metrics = evaluate(split)
        if split == "val":
            metrics[config.train.select_metric] = 100.0 - trainer.epoch
        return metrics

    trainer.evaluate = falling
    assert "validation after epochs 2, 4, 6-7" in describe_plan(trainer)
    trainer.fit()
    records = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    validated = [r["epoch"] for r in records if r.get("type") == "epoch" and "val_gt_known_loc" in r]
    assert validated == authors_validated_epochs(7, 2, [6]) == [2, 4, 6, 7]
    assert load_checkpoint(out_dir / "best.pt")["epoch"] == 4
