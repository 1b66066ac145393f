"""Every config problem in one error; missing weights and backbones say what to do."""

import re
import shutil
import urllib.error
from pathlib import Path

import pytest

from fastwsol.cli import main
from fastwsol.cli.train import file_problems
from fastwsol.config import ConfigError, load_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_a_copied_config_reports_every_problem_at_once(tmp_path, monkeypatch):
    copy = tmp_path / "my.yaml"
    shutil.copyfile(CONFIGS / "synthetic.yaml", copy)
    monkeypatch.chdir(tmp_path)  # no data, no pretraining run here
    with pytest.raises(ConfigError) as info:
        load_config(copy, ["optim.epochs=1", "optim.lr=fast", "train.select_from_epoch=3", "optim.lr_decay_epochs=[9]"],
                    checks=[file_problems])
    message = str(info.value)
    for key in ("optim.lr", "train.select_from_epoch", "optim.lr_decay_epochs", "data.metadata_root", "data.data_root",
                "model.init_from"):
        assert f"{key}:" in message, key
    assert message.startswith("6 problems")
    assert "fastwsol make-synthetic data/synthetic" in message
    assert "runs/reproduce/pretrain/last.pt" in message and "already trained" not in message

    # a reproduction's backbone is there: the error points at it
    (tmp_path / "runs" / "reproduce" / "pretrain").mkdir(parents=True)
    (tmp_path / "runs" / "reproduce" / "pretrain" / "last.pt").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"`fastwsol reproduce` already trained one: model.init_from=runs/reproduce/pretrain/last.pt"):
        load_config(copy, checks=[file_problems])


def test_lr_decay_beyond_the_last_epoch(capsys):
    # a schedule that never applies (a shortened run) is an error
    with pytest.raises(ConfigError, match=r"optim\.lr_decay_epochs: \[6, 8\] lies beyond optim\.epochs \(5\)"):
        load_config(None, ["optim.epochs=5", "optim.warm_epochs=0", "optim.lr_decay_epochs=[6, 8]"])
    assert load_config(None, ["optim.epochs=6", "optim.warm_epochs=0", "optim.lr_decay_epochs=[6]"]).optim.epochs == 6
    assert "note" not in capsys.readouterr().err
    # one decay past the end (the authors' ImageNet schedule): a note
    load_config(CONFIGS / "ilsvrc_resnet50.yaml")
    assert "optim.lr_decay_epochs [31] lie beyond optim.epochs (30) and never apply" in capsys.readouterr().err


def test_train_prints_all_problems_without_traceback(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--config", str(CONFIGS / "synthetic.yaml"), "--set", "optim.epochs=1"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "model.init_from" in err and "data.data_root" in err
    # the shortened schedule is no problem: scaled, with a note
    assert "train.select_from_epoch 6 -> 1" in err and "train.select_from_epoch:" not in err


def test_the_missing_data_hint_is_a_command_that_makes_it(hashes):
    """An empty config reads data/synthetic/images (data.data_root) and data/synthetic/metadata:
    the hint's make-synthetic command and --set make a config that finds both."""
    with pytest.raises(ConfigError) as info:
        load_config(None, checks=[file_problems])
    message = str(info.value)
    assert "data.data_root:" in message and "data.metadata_root:" in message
    out = re.search(r"`fastwsol make-synthetic (\S+)`", message).group(1)
    settings = sorted(set(re.findall(r"--set (\S+)", message)))
    assert settings == [f"data.data_root={Path(out) / 'data'}"]
    assert main(["make-synthetic", out, "--classes", "2", "--train-per-class", "2", "--test-per-class", "1"]) == 0
    assert load_config(None, settings, checks=[file_problems]).data.data_root == str(Path(out) / "data")


def test_make_synthetic_defaults_are_the_set_reproduce_uses(tmp_path):
    from fastwsol.cli import build_parser
    from fastwsol.cli.make_synthetic import WSOL_SET, body_groups, val_per_class
    from fastwsol.reproduce.plan import WSOL_DATASET

    assert WSOL_SET == WSOL_DATASET
    args = build_parser().parse_args(["make-synthetic", str(tmp_path / "s")])
    resolved = {"classes": args.classes, "train_per_class": args.train_per_class, "val_per_class": val_per_class(args),
                "test_per_class": 100 if args.test_per_class is None else args.test_per_class,
                "body_groups": body_groups(args)}
    assert resolved == WSOL_DATASET
    # groups tint the parts task's bodies only, and never outnumber the classes
    assert body_groups(build_parser().parse_args(["make-synthetic", "s", "--task", "objects"])) == 0
    assert body_groups(build_parser().parse_args(["make-synthetic", "s", "--classes", "1"])) == 1


def test_imagenet_weights_without_network(monkeypatch):
    import torchvision.models._api as api

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(api, "load_state_dict_from_url", no_network)
    from fastwsol.models import create_model

    with pytest.raises(ConnectionError, match=r"could not download torchvision's VGG16 weights \(no network\?\): "
                                              r"pass a local file with model\.pretrained=PATH"):
        create_model("vgg16", 10, pretrained="imagenet")
