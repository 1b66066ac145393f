"""`fastwsol reproduce` reuses or resumes a run only when its recorded config matches (settings
its objective does not read aside), and finds a finished backbone of the same settings."""

from pathlib import Path

import pytest
import torch

from fastwsol.config import load_config
from fastwsol.io import load_checkpoint
from fastwsol.reproduce import PRETRAIN_CONFIG, train_run
from fastwsol.reproduce.run import changed_settings, finished_backbone_elsewhere, pretrain_backbone


def test_reuse_resume_refuse_and_fresh(tiny_run_overrides, tmp_path, hashes, capsys):
    run = tmp_path / "cam"
    overrides = [o for o in tiny_run_overrides(run, "optim.epochs=1", "optim.warm_epochs=0") if not o.startswith("train.out_dir")]
    first = train_run(None, run, overrides, "a tiny run", fresh=False)
    capsys.readouterr()

    before = hashes(run)
    reused = train_run(None, run, [*overrides, "train.progress=true"], "a tiny run", fresh=False)
    assert reused["max_box_acc_v2"] == first["max_box_acc_v2"] and reused["train_seconds"] == first["train_seconds"]
    assert "reusing" in capsys.readouterr().out and hashes(run) == before  # same settings: reused as it is

    with pytest.raises(ValueError, match=r"optim\.lr 0\.01 -> 0\.02.*--fresh"):
        train_run(None, run, [*overrides, "optim.lr=0.02"], "a tiny run", fresh=False)
    assert hashes(run) == before

    # an interrupted run (no test metrics yet) is not resumed with other settings either
    (run / "test_metrics.json").unlink()
    before = hashes(run)
    with pytest.raises(ValueError, match=r"optim\.lr 0\.01 -> 0\.02"):
        train_run(None, run, [*overrides, "optim.lr=0.02"], "a tiny run", fresh=False)
    assert hashes(run) == before
    train_run(None, run, overrides, "a tiny run", fresh=False)
    assert "resuming" in capsys.readouterr().out

    train_run(None, run, [*overrides, "optim.lr=0.02"], "a tiny run", fresh=True)
    assert load_checkpoint(run / "last.pt")["config"]["optim"]["lr"] == 0.02


def _tiny(tiny_run_overrides, *extra):
    return [o for o in tiny_run_overrides("unused", *extra) if not o.startswith("train.out_dir")]


def test_a_vanilla_run_is_reused_over_settings_vanilla_cam_does_not_read(tiny_run_overrides, tmp_path, hashes,
                                                                          capsys):
    overrides = _tiny(tiny_run_overrides, "optim.epochs=1", "optim.warm_epochs=0", "model.method=cam")
    unread = ["loss.lambda_sim=0.25", "loss.lambda_drop=2", "loss.lambda_norm=0", "loss.fg_threshold=0.5",
              "loss.fine_grained=false", "model.drop_prob=0.3", "model.drop_threshold=0.5",
              "optim.warm_epochs=1", "optim.warm_batch_size=2"]
    run = tmp_path / "cam"
    first = train_run(None, run, overrides, "vanilla CAM", fresh=False)
    capsys.readouterr()
    before = hashes(run)
    reused = train_run(None, run, [*overrides, *unread], "vanilla CAM", fresh=False)
    printed = capsys.readouterr().out
    assert reused["train_seconds"] == first["train_seconds"] and hashes(run) == before
    assert "reusing" in printed and "it does not read" in printed and "loss.lambda_sim 0.5 -> 0.25" in printed
    with pytest.raises(ValueError, match=r"optim\.lr 0\.01 -> 0\.02"):  # a setting it reads still counts
        train_run(None, run, [*overrides, *unread, "optim.lr=0.02"], "vanilla CAM", fresh=False)
    assert hashes(run) == before

    # unread indeed: trained with them, vanilla CAM ends with the very same weights
    other = tmp_path / "cam_unread"
    train_run(None, other, [*overrides, *unread], "vanilla CAM", fresh=False)
    weights, other_weights = (load_checkpoint(d / "last.pt")["model"] for d in (run, other))
    assert weights.keys() == other_weights.keys()
    assert all(torch.equal(weights[k], other_weights[k]) for k in weights)


def test_the_method_reads_its_losses_settings():
    base = ["optim.epochs=2", "optim.warm_epochs=0", "optim.lr_decay_epochs=[]", "train.select_from_epoch=1"]
    recorded = load_config(None, base).to_dict()
    changes, unread = changed_settings(recorded, load_config(None, [*base, "loss.lambda_sim=0.25"]))
    assert changes == {"loss.lambda_sim": (0.5, 0.25)} and not unread
    # the method's rows without L_drop build no dropped path, so its settings are unread there
    no_drop = [*base, "loss.lambda_drop=0"]
    changes, unread = changed_settings(load_config(None, no_drop).to_dict(),
                                       load_config(None, [*no_drop, "model.drop_prob=0.3", "loss.lambda_sim=0.25"]))
    assert changes == {"loss.lambda_sim": (0.5, 0.25)} and unread == {"model.drop_prob": (0.5, 0.3)}
    # a setting read by one of the two runs counts
    changes, _ = changed_settings(load_config(None, [*base, "model.method=cam"]).to_dict(),
                                  load_config(None, [*base, "loss.lambda_sim=0.25"]))
    assert set(changes) == {"model.method", "loss.lambda_sim"}


def test_a_new_out_copies_a_finished_backbone_of_the_same_settings(tiny_run_overrides, hashes, capsys):
    pretrain = [o for o in _tiny(tiny_run_overrides, "optim.epochs=1") if not o.startswith("model.name")]
    first, second = Path("runs/first"), Path("runs/second")  # relative: under this test's working directory
    metrics, new = pretrain_backbone(first, pretrain, fresh=False)
    assert new
    before = hashes(first)
    capsys.readouterr()

    copied, new = pretrain_backbone(second, pretrain, fresh=False)
    printed = capsys.readouterr().out
    assert f"copying the pretraining of the same settings from {(first / 'pretrain').resolve()}" in printed
    assert "reusing" in printed and "] training" not in printed
    assert copied["train_seconds"] == metrics["train_seconds"] and new  # new in `second`: fine-tunings there start afresh
    assert hashes(second / "pretrain") == hashes(first / "pretrain") and hashes(first) == before
    assert not list(second.glob(".*"))  # no partial copy left
    _, new = pretrain_backbone(second, pretrain, fresh=False)
    assert not new

    # other settings: refused where a backbone is, naming the flag that retrains it; never copied
    before = hashes(Path("runs"))
    with pytest.raises(ValueError, match=r"optim\.lr 0\.01 -> 0\.02.*--fresh-backbone"):
        pretrain_backbone(second, [*pretrain, "optim.lr=0.02"], fresh=False)
    assert hashes(Path("runs")) == before
    other = load_config(PRETRAIN_CONFIG, [*pretrain, "optim.lr=0.02"])
    assert finished_backbone_elsewhere(Path("runs/third"), other) is None
    same = load_config(PRETRAIN_CONFIG, pretrain)
    assert finished_backbone_elsewhere(Path("runs/third"), same) == (first / "pretrain").resolve()


def test_reproduce_help_names_what_fresh_keeps(capsys):
    from fastwsol.cli import main
    from fastwsol.cli.reproduce import DEFAULT_OUT as CLI_DEFAULT_OUT
    from fastwsol.reproduce import DEFAULT_OUT

    assert Path(CLI_DEFAULT_OUT) == DEFAULT_OUT
    with pytest.raises(SystemExit):
        main(["reproduce", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--fresh-backbone" in text and "the pretrained backbone is kept" in text
    assert "a new OUT copies a finished pretraining of the same settings" in text
