"""`fastwsol train` into a folder that holds a run: refused unless --resume or --overwrite."""

import json

from fastwsol.cli import main
from fastwsol.config import load_config
from fastwsol.train import Trainer


def _train_args(overrides, config="configs/synthetic_pretrain.yaml"):
    return ["train", "--config", str(config), *(a for o in overrides for a in ("--set", o))]


def test_a_finished_run_is_refused_and_left_byte_identical(tiny_checkpoint, tiny_run_overrides, hashes, capsys):
    run = tiny_checkpoint.parent
    before = hashes(run)
    assert {"last.pt", "best.pt", "test_metrics.json", "metrics.jsonl"} <= set(before)
    assert main(_train_args([*tiny_run_overrides(run), "optim.lr=0.02"])) == 2
    err = capsys.readouterr().err
    assert str(run) in err and "--out-dir" in err and "--overwrite" in err
    assert "it is finished" in err and "--resume" not in err  # nothing left to resume
    assert "optim.lr 0.01 -> 0.02" in err  # which settings differ from the recorded run
    assert "\n" not in err.strip() and "Traceback" not in err
    assert hashes(run) == before
    # more epochs than it ran: --resume continues it
    assert main(_train_args([*tiny_run_overrides(run), "optim.epochs=3"])) == 2
    assert "continue it with --resume" in capsys.readouterr().err
    assert hashes(run) == before


def test_a_run_without_last_pt_is_refused_without_advising_resume(tiny_checkpoint, tiny_run_overrides, tmp_path,
                                                                   hashes, capsys):
    """A run stopped before its first last.pt (a kill between best.pt and last.pt): --resume
    could not continue it, so the refusal does not advise it."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "best.pt").write_bytes(tiny_checkpoint.read_bytes())
    before = hashes(run)
    assert main(_train_args(tiny_run_overrides(run))) == 2
    err = capsys.readouterr().err
    assert "no last.pt to resume from" in err and "--resume" not in err and "--overwrite" in err
    assert hashes(run) == before


def test_a_failed_start_leaves_no_run_folder(tiny_run_overrides, tmp_path, capsys):
    run = tmp_path / "run"
    # 18 training images make no batch of 64: the data fails after the config passed its checks
    assert main(_train_args(tiny_run_overrides(run, "optim.warm_batch_size=64"))) == 2
    assert "optim.warm_batch_size=64" in capsys.readouterr().err
    assert not run.exists()


def test_overwrite_replaces_only_the_runs_files(tiny_run_overrides, tmp_path, hashes):
    run = tmp_path / "run"
    overrides = tiny_run_overrides(run, "optim.epochs=1", "optim.warm_epochs=0", "train.log_interval=1")
    Trainer(load_config(None, overrides)).fit()
    (run / "notes.txt").write_text("mine")
    first_lines = (run / "metrics.jsonl").read_text().splitlines()
    # a config that fails after the check leaves the old run as it was
    assert main(_train_args([*overrides, "model.name=vgg_unknown"]) + ["--overwrite"]) == 2
    assert len((run / "metrics.jsonl").read_text().splitlines()) == len(first_lines)
    before = hashes(run)
    assert main(_train_args(overrides) + ["--overwrite"]) == 0
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == len(first_lines)  # a clean log, not both runs'
    assert json.loads(lines[-1])["type"] == "test"
    assert (run / "notes.txt").read_text() == "mine"
    assert hashes(run)["last.pt"] != before["last.pt"]


def test_resume_and_overwrite_exclude_each_other(tiny_run_overrides, tmp_path, capsys):
    assert main(_train_args(tiny_run_overrides(tmp_path)) + ["--resume", "--overwrite"]) == 2
    assert "give one" in capsys.readouterr().err
