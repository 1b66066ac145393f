"""The training loop: schedule and parameter groups, resume after a kill, SIGTERM, NaN, DDP.

Runs are tiny (vgg_small, 64² crops, a few synthetic images) and eager (``train.compile=false``:
the compiled step has its own test); faults are injected by the driver script below, never by
library code.
"""

import csv
import io
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from fastwsol.config import load_config
from fastwsol.io import load_checkpoint
from fastwsol.models import create_model, model_from_config
from fastwsol.objective import LOSS_TERMS, Objective
from fastwsol.train import NonFiniteLossError, Trainer, build_optimizer, lr_factor


def test_lr_schedule_and_parameter_groups():
    config = load_config(None, ["optim.lr=0.004", "optim.new_layer_lr_multiplier=5"])
    # 1-based decay epochs 41 and 61: the 41st epoch (index 40) is the first at ×0.2.
    assert [lr_factor(e, config) for e in (0, 39, 40, 59, 60, 69)] == pytest.approx([1, 1, 0.2, 0.2, 0.04, 0.04])
    model = create_model("vgg16", 10)
    optimizer = build_optimizer(model, config)
    backbone, new = optimizer.param_groups
    new_ids = {id(p) for p in new["params"]}
    assert new_ids == {id(p) for p in (*model.tail.conv6.parameters(), *model.fc.parameters())}
    assert len(backbone["params"]) == 26  # 13 pretrained convs × (weight, bias)
    assert new["lr"] == pytest.approx(5 * backbone["lr"]) and backbone["lr"] == 0.004
    assert optimizer.defaults["nesterov"] and optimizer.defaults["momentum"] == 0.9


def final_weights(out_dir: Path) -> dict:
    return load_checkpoint(out_dir / "last.pt")["model"]


def assert_same_weights(a: dict, b: dict, **tolerance):
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], msg=key, **tolerance)


DRIVER = textwrap.dedent(
    """
    import os, signal, sys
    from fastwsol.config import load_config
    from fastwsol.train import Trainer

    fault, at_step, overrides = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    trainer = Trainer(load_config(None, overrides), resume="--resume" in os.environ.get("DRIVER_FLAGS", ""))
    step = trainer.optimizer.step

    def faulty_step(*args, **kwargs):
        step(*args, **kwargs)
        if trainer.global_step + 1 == at_step:  # global_step counts this step right after
            os.kill(os.getpid(), getattr(signal, fault))

    trainer.optimizer.step = faulty_step
    trainer.fit()
    """
)


def run_driver(tmp_path, fault, at_step, overrides, resume=False):
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    env = {**os.environ, "DRIVER_FLAGS": "--resume" if resume else ""}
    return subprocess.run(
        [sys.executable, str(script), fault, str(at_step), *overrides], env=env, capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def uninterrupted_run(tiny_run_overrides, tmp_path_factory):
    """(out_dir, test metrics) of one tiny run, the reference for the resume tests."""
    out_dir = tmp_path_factory.mktemp("uninterrupted")
    metrics = Trainer(load_config(None, tiny_run_overrides(out_dir, "train.log_interval=1"))).fit()
    return out_dir, metrics


@pytest.mark.parametrize(
    "overrides, with_dropped_path, expected",
    [
        ((), True, "L_CE + 3·L_drop for 6 warm epochs, then L_CE + 3·L_drop + 0.5·L_sim + 0.15·L_norm"),
        # the ablation row without L_drop: no dropped path, the warm stage kept
        (("loss.lambda_drop=0",), False, "L_CE for 6 warm epochs, then L_CE + 0.5·L_sim + 0.15·L_norm"),
        # vanilla CAM ignores the config's λ and warm epochs
        (("model.method=cam",), False, "L_CE (vanilla CAM: model.method=cam)"),
        (("loss.lambda_sim=0", "optim.warm_epochs=0"), True, "L_CE + 3·L_drop + 0.15·L_norm"),
        (("optim.warm_epochs=1",), True, "L_CE + 3·L_drop for 1 warm epoch, then L_CE + 3·L_drop + 0.5·L_sim + 0.15·L_norm"),
    ],
)
def test_the_objective_is_described_and_built_as_run(overrides, with_dropped_path, expected):
    # the paper's CUB λ (the defaults), a 6-epoch warm stage
    config = load_config(None, ["model.name=vgg_small", "optim.warm_epochs=6", *overrides])
    objective = Objective.from_config(config)
    assert objective.describe() == expected
    assert model_from_config(config, 3, load_weights=False).with_dropped_path == with_dropped_path
    assert objective.warm_epochs == (0 if config.model.method == "cam" else config.optim.warm_epochs)


def test_vanilla_cam_optimises_cross_entropy_only():
    config = load_config(None, ["model.name=vgg_small_nobn", "model.method=cam"])
    objective = Objective.from_config(config)
    torch.manual_seed(0)
    model = model_from_config(config, 3, load_weights=False).train()
    out, labels = model(torch.randn(2, 3, 64, 64)), torch.tensor([0, 2])
    terms = objective.losses(out, labels, model.fc.weight, full=True, backend="reference")
    assert set(terms) == set(LOSS_TERMS) and "feature_dropped" not in out
    assert terms["drop"] == terms["sim"] == terms["norm"] == 0
    assert objective.total(terms) == terms["ce"]


def test_resume_after_kill_matches_uninterrupted_run(tiny_run_overrides, uninterrupted_run, tmp_path):
    reference_dir, killed_dir = uninterrupted_run[0], tmp_path / "killed"

    # 18 images / batch 4 = 4 steps per epoch: SIGKILL after step 6, i.e. mid-way through epoch 2.
    killed = run_driver(tmp_path, "SIGKILL", 6, tiny_run_overrides(killed_dir))
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert load_checkpoint(killed_dir / "last.pt")["epoch"] == 1  # the end-of-epoch-1 checkpoint survived

    resumed = Trainer(load_config(None, tiny_run_overrides(killed_dir)), resume=True)
    assert resumed.epoch == 1 and resumed.step_in_epoch == 0
    resumed.fit()
    assert_same_weights(final_weights(reference_dir), final_weights(killed_dir), rtol=0, atol=0)


def test_sigterm_checkpoints_mid_epoch_and_resumes_exactly(tiny_run_overrides, uninterrupted_run, tmp_path, capsys):
    reference_dir, stopped_dir = uninterrupted_run[0], tmp_path / "stopped"

    stopped = run_driver(tmp_path, "SIGTERM", 6, tiny_run_overrides(stopped_dir))
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr
    assert "SIGTERM" in stopped.stderr and "--resume" in stopped.stderr
    # stderr is a pipe here, not a terminal: the start block and the epoch line are printed anyway
    assert f"vgg_small into {stopped_dir}" in stopped.stderr
    assert "plan: 2 epochs × 4 steps of 4 = 8 steps, 16 training images per epoch; validation after every epoch" in stopped.stderr
    assert "for 1 warm epoch, then" in stopped.stderr
    assert re.search(r"epoch 1/2 \(warm\): loss [\d.]+ \(ce .*img/s.*val GT-known [\d.]+/[\d.]+ \(multi/single contour\)"
                     r".*inverted [\d.]+ %, peak in GT [\d.]+ %", stopped.stderr), stopped.stderr
    state = load_checkpoint(stopped_dir / "last.pt")
    assert (state["epoch"], state["step_in_epoch"], state["global_step"]) == (1, 2, 6)  # the step finished first

    capsys.readouterr()
    Trainer(load_config(None, tiny_run_overrides(stopped_dir)), resume=True).fit()
    assert f"resuming from {stopped_dir / 'last.pt'} at epoch 2 step 2 (global step 6)" in capsys.readouterr().err
    assert_same_weights(final_weights(reference_dir), final_weights(stopped_dir), rtol=0, atol=0)
    # the resumed epoch's losses average all its steps, those before the stop too
    resumed, uninterrupted = (epoch_records(d)[2] for d in (stopped_dir, reference_dir))
    for term in ("total", *LOSS_TERMS):
        assert resumed[f"loss_{term}"] == pytest.approx(uninterrupted[f"loss_{term}"], rel=1e-6, abs=1e-7), term


def epoch_records(out_dir: Path) -> dict[int, dict]:
    lines = (out_dir / "metrics.jsonl").read_text().splitlines()
    return {r["epoch"]: r for r in map(json.loads, lines) if r["type"] == "epoch"}


def test_resuming_a_finished_run_says_so_and_changes_nothing(uninterrupted_run, tiny_run_overrides, tmp_path, capsys):
    finished = tmp_path / "finished"
    shutil.copytree(uninterrupted_run[0], finished)
    before = {p.name: p.read_bytes() for p in finished.iterdir() if p.is_file()}
    capsys.readouterr()
    metrics = Trainer(load_config(None, tiny_run_overrides(finished, "train.log_interval=1")), resume=True).fit()
    err = capsys.readouterr().err
    assert "is finished (epoch 2 of 2) and tested" in err and "resuming from" not in err
    assert metrics == json.loads((finished / "test_metrics.json").read_text())
    assert {p.name: p.read_bytes() for p in finished.iterdir() if p.is_file()} == before  # no second test record


def test_a_closed_output_pipe_stops_the_run_with_its_checkpoint(tiny_run_overrides, uninterrupted_run, tmp_path):
    """`fastwsol train ... 2>&1 | head -n 5`: the reader goes away after the start block; the
    next line (epoch 1's) cannot be written. The run stops as on a signal, with last.pt written
    (never best.pt without it), and --resume finishes it as if nothing had happened."""
    run = tmp_path / "piped"
    empty = tmp_path / "empty.yaml"
    empty.write_text("{}\n")
    args = [a for o in tiny_run_overrides(run, "train.log_interval=1") for a in ("--set", o)]
    process = subprocess.Popen([sys.executable, "-m", "fastwsol", "train", "--config", str(empty), *args],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lines = [process.stdout.readline() for _ in range(4)]
    assert lines[0].startswith(b"fastwsol train:") and lines[3].startswith(b"  device:"), lines
    process.stdout.close()
    assert process.wait(timeout=600) == 128 + signal.SIGPIPE
    assert (run / "best.pt").is_file() and (run / "last.pt").is_file()
    assert load_checkpoint(run / "last.pt")["epoch"] == 1
    Trainer(load_config(None, tiny_run_overrides(run, "train.log_interval=1")), resume=True).fit()
    assert_same_weights(final_weights(uninterrupted_run[0]), final_weights(run), rtol=0, atol=0)


def test_non_finite_loss_stops_with_the_step_and_terms(tiny_run_overrides, tmp_path):
    trainer = Trainer(load_config(None, tiny_run_overrides(tmp_path / "nan", "optim.lr=1e30")))
    with pytest.raises(NonFiniteLossError, match=r"step \d+.*L_total=.*L_ce=.*L_drop=.*L_sim=.*L_norm="):
        trainer.fit()


def test_trains_and_evaluates_to_files(uninterrupted_run):
    out_dir, metrics = uninterrupted_run
    for key in ("gt_known_loc", "max_box_acc_v2", "top1_loc", "top1_cls"):
        assert 0.0 <= metrics[key] <= 100.0
    assert metrics["num_images"] == 6  # the test split, every image once
    assert {p.name for p in out_dir.iterdir()} >= {"last.pt", "best.pt", "metrics.jsonl", "test_metrics.json"}
    records = [line for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    assert any('"type": "train"' in r for r in records) and any('"val_gt_known_loc"' in r for r in records)
    assert not list(out_dir.glob(".*.tmp"))  # atomic writes leave no temporary files
    # the settings as YAML: the same config again when given as --config
    assert load_config(out_dir / "config.yaml").to_dict() == load_checkpoint(out_dir / "last.pt")["config"]
    # a CSV row per epoch, the epoch records' values
    rows = list(csv.DictReader(io.StringIO((out_dir / "metrics.csv").read_text())))
    epochs = epoch_records(out_dir)
    assert [int(r["epoch"]) for r in rows] == sorted(epochs) == [1, 2]
    for row in rows:
        assert float(row["loss_total"]) == epochs[int(row["epoch"])]["loss_total"]
        assert float(row["val_gt_known_loc"]) == epochs[int(row["epoch"])]["val_gt_known_loc"]


@pytest.mark.parametrize(
    "epoch, metric, previous, best, expected",
    [
        (3, 40.0, None, True, "top1_loc_single 40.00 [best]"),
        (4, 50.0, (45.0, 3), True, "top1_loc_single 50.00 [best: above 45.00 of epoch 3]"),
        (9, 68.5, (73.0, 6), False, "top1_loc_single 68.50 (best: 73.00 of epoch 6)"),
        (2, 80.0, None, False, "top1_loc_single 80.00 (selection from epoch 3 on)"),
    ],
)
def test_the_epoch_line_shows_the_selection_metric_and_why_best(epoch, metric, previous, best, expected):
    from fastwsol.train import describe_epoch

    config = load_config(None, ["model.name=vgg_small", "optim.epochs=9", "optim.warm_epochs=0",
                                "optim.lr_decay_epochs=[]", "train.select_metric=top1_loc_single",
                                "train.select_from_epoch=3"])
    record = {f"loss_{k}": 0.5 for k in ("total", *LOSS_TERMS)} | {"images_per_s": 10.0, "seconds": 1.0}
    record |= {f"val_{k}": 1.0 for k in ("gt_known_loc", "gt_known_loc_single", "max_box_acc_v2",
                                          "max_box_acc_v2_single", "top1_cls", "inverted_pct", "peak_in_gt_pct")}
    record["val_top1_loc_single"] = metric
    before = {"metric": previous[0], "epoch": previous[1]} if previous else {"metric": -math.inf, "epoch": None}
    line = describe_epoch(epoch, config, Objective.from_config(config), record, best, before)
    assert line.endswith("; " + expected), line


def test_ddp_two_processes_equal_single_process(tiny_run_overrides, tmp_path):
    """2 gloo ranks × batch 2 = the single process's batch 4: same samples, same weights.

    drop_prob = 1 makes the attentive dropout deterministic (every candidate dropped), so the
    per-rank random streams cannot differ from the single process's; the model has no
    BatchNorm (under DDP each rank normalises its own batch, as torch's DDP does).
    """
    extra = ("model.name=vgg_small_nobn", "model.drop_prob=1.0", "train.eval_interval=0")
    single_dir, ddp_dir = tmp_path / "single", tmp_path / "ddp"
    Trainer(load_config(None, tiny_run_overrides(single_dir, *extra))).fit()
    empty_config = tmp_path / "empty.yaml"
    empty_config.write_text("{}\n")
    overrides = [arg for o in tiny_run_overrides(ddp_dir, *extra) for arg in ("--set", o)]
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517",
         "-m", "fastwsol", "train", "--config", str(empty_config), *overrides],
        capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert_same_weights(final_weights(single_dir), final_weights(ddp_dir), rtol=1e-4, atol=1e-6)
    single, ddp = (load_checkpoint(d / "last.pt")["global_step"] for d in (single_dir, ddp_dir))
    assert single == ddp == 8


@pytest.mark.parametrize("precision, channels_last", [("bf16", False), ("fp32", True)])
def test_bf16_autocast_and_channels_last_steps_match_fp32(precision, channels_last):
    """The options change the arithmetic, not the step: losses and gradients stay close to fp32 NCHW."""
    from fastwsol.train import TrainStep

    def run(overrides):
        torch.manual_seed(0)
        config = load_config(None, ["train.compile=false", "train.backend=reference", "model.drop_prob=1.0", *overrides])
        model = create_model("vgg_small_nobn", 4, drop_prob=1.0).train()
        if config.train.channels_last:
            model = model.to(memory_format=torch.channels_last)
        images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
        values = TrainStep(model, model.fc.weight, config, uint8_input=True)(images, torch.tensor([0, 3]), full=True)
        return values, model.fc.weight.grad.clone()

    base_values, base_grad = run([])
    values, grad = run([f"train.precision={precision}", f"train.channels_last={channels_last}"])
    tolerance = dict(rtol=5e-2, atol=5e-3) if precision == "bf16" else dict(rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(values, base_values, **tolerance)
    torch.testing.assert_close(grad, base_grad, rtol=tolerance["rtol"] * 4, atol=tolerance["atol"] * 4)


@pytest.mark.parametrize("select_from_epoch, best_epoch", [(1, 1), (2, 2)])
def test_best_checkpoint_is_chosen_from_select_from_epoch_on(tiny_run_overrides, tmp_path, select_from_epoch, best_epoch):
    """``train.select_from_epoch``: earlier epochs are validated (and logged) but never become
    best.pt. The val metric is made to fall with the epoch, so epoch 1 wins unless excluded."""
    out_dir = tmp_path / f"from{select_from_epoch}"
    config = load_config(None, tiny_run_overrides(out_dir, f"train.select_from_epoch={select_from_epoch}"))
    trainer = Trainer(config)
    evaluate = trainer.evaluate

    def falling(split):
        metrics = evaluate(split)
        if split == "val":
            metrics[config.train.select_metric] = 100.0 - trainer.epoch
        return metrics

    trainer.evaluate = falling
    trainer.fit()
    assert load_checkpoint(out_dir / "best.pt")["epoch"] == best_epoch
    records = (out_dir / "metrics.jsonl").read_text()
    assert records.count('"val_gt_known_loc"') == 2  # both epochs validated


def test_best_checkpoint_by_single_contour_top1_loc(tiny_run_overrides, tmp_path):
    """``train.select_metric=top1_loc_single`` is a key the evaluator really reports, and it
    alone decides: made to rise with the epoch while MaxBoxAccV2 falls, the last epoch wins."""
    out_dir = tmp_path / "t1l"
    config = load_config(None, tiny_run_overrides(out_dir, "train.select_metric=top1_loc_single", "optim.epochs=3"))
    trainer = Trainer(config)
    evaluate = trainer.evaluate

    def rising(split):
        metrics = evaluate(split)
        if split == "val":
            assert "top1_loc_single" in metrics
            metrics["top1_loc_single"] = float(trainer.epoch)
            metrics["max_box_acc_v2"] = 100.0 - trainer.epoch
        return metrics

    trainer.evaluate = rising
    trainer.fit()
    assert load_checkpoint(out_dir / "best.pt")["epoch"] == 3


@pytest.mark.parametrize("value", [0, 3])
def test_select_from_epoch_outside_the_run_is_an_error_naming_the_key(value):
    with pytest.raises(ValueError, match=r"train.select_from_epoch: must lie in \[1, optim.epochs = 2\]"):
        load_config(None, ["optim.epochs=2", "optim.lr_decay_epochs=[]", f"train.select_from_epoch={value}"])
