"""`fastwsol train` as a user meets it: a short run of every shipped config, the batch of a
stage that does not run, progress and the selection in a log, TensorBoard, the CUDA probe's
warning, and `fastwsol runs`. Runs are tiny and eager (tests/conftest.py's tiny_run_overrides)."""

import functools
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from fastwsol.cli import main
from fastwsol.config import load_config
from fastwsol.io import load_checkpoint
from fastwsol.train import Trainer, describe_plan

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
SCHEDULE = ("optim.epochs=", "optim.warm_epochs=", "optim.lr_decay_epochs=")


def train_args(config, overrides, *extra) -> list[str]:
    return ["train", "--config", str(config), *(a for o in overrides for a in ("--set", o)), *extra]


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_one_epoch_of_every_shipped_config_trains(name, tiny_run_overrides, tiny_openimages_overrides, tmp_path,
                                                  capsys):
    """`--set optim.epochs=1` with the config's own schedule (the tiny data, model and batch
    instead of the config's, the tiny OpenImages tree for an OpenImages config; no download, no
    pretraining run)."""
    run = tmp_path / "run"
    overrides = tiny_openimages_overrides if load_config(CONFIGS / name).data.dataset == "OpenImages" else tiny_run_overrides
    tiny = [o for o in overrides(run) if not o.startswith(SCHEDULE) and not o.startswith("train.select_metric=")]
    overrides = [*tiny, "model.pretrained=null", "model.keep_pretrained_classifier=false", "model.init_from=null",
                 "train.eval_interval=0", "train.max_steps_per_epoch=1", "optim.epochs=1"]
    assert main(train_args(CONFIGS / name, overrides, "--seed", "5", "--device", "cpu")) == 0, capsys.readouterr().err
    state = load_checkpoint(run / "last.pt")
    assert state["epoch"] == 1 and (run / "test_metrics.json").is_file()
    assert (state["config"]["train"]["seed"], state["config"]["train"]["device"]) == (5, "cpu")


def test_device_cuda_without_cuda_is_an_argument_error(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(SystemExit) as info:
        main(["train", "--config", str(CONFIGS / "synthetic.yaml"), "--device", "cuda"])
    assert info.value.code == 2 and "CUDA is not available" in capsys.readouterr().err


def test_without_a_warm_stage_the_warm_batch_size_is_not_used(tiny_run_overrides, tmp_path):
    # 18 training images make no batch of 32: a warm stage at 32 could not run, none is planned
    config = load_config(None, tiny_run_overrides(tmp_path / "run", "optim.warm_epochs=0", "optim.warm_batch_size=32"))
    trainer = Trainer(config)
    assert "1 warm" not in describe_plan(trainer) and "2 epochs × 4 steps of 4" in describe_plan(trainer)
    assert {batch for split, batch in trainer._loaders if split == "train"} == {4}


def test_a_log_shows_progress_in_epochs_and_validation_and_the_selection(tiny_run_overrides, tmp_path, monkeypatch,
                                                                         capsys):
    """No terminal (nohup, Slurm): progress lines within the epoch and within validation (here
    after every step: a zero interval), and the epoch line names the selection metric."""
    from fastwsol import progress

    monkeypatch.setattr("fastwsol.train.Progress", functools.partial(progress.Progress, interval=0.0, terminal=False))
    config = load_config(None, tiny_run_overrides(tmp_path / "run", "optim.epochs=1", "optim.warm_epochs=0",
                                                  "train.progress=true", "train.select_metric=top1_loc_single"))
    Trainer(config).fit()
    err = capsys.readouterr().err
    assert "epoch 1/1: 1/4 (25 %)" in err and "img/s" in err and "left" in err
    assert "validate epoch 1: 1/2 (50 %)" in err and "test: 1/2 (50 %)" in err
    epoch_line = next(line for line in err.splitlines() if line.startswith("epoch 1/1: loss"))
    assert "; top1_loc_single " in epoch_line and epoch_line.endswith("[best]")


class FakeSummaryWriter:
    made: list = []

    def __init__(self, log_dir):
        self.log_dir, self.scalars, self.images = log_dir, {}, {}
        FakeSummaryWriter.made.append(self)

    def add_scalar(self, tag, value, step):
        self.scalars.setdefault(tag, []).append((step, value))

    def add_images(self, tag, images, step, dataformats):
        self.images[tag] = (images, step, dataformats)

    def close(self):
        pass


def test_tensorboard_scalars_and_cam_images_when_installed_and_allowed(tiny_run_overrides, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=FakeSummaryWriter))
    FakeSummaryWriter.made = []
    run = tmp_path / "run"
    Trainer(load_config(None, tiny_run_overrides(run, "optim.epochs=1", "optim.warm_epochs=0"))).fit()
    (writer,) = FakeSummaryWriter.made
    assert writer.log_dir == str(run / "tensorboard")
    assert {"epoch/loss_total", "epoch/val_gt_known_loc", "test/gt_known_loc"} <= set(writer.scalars)
    images, step, layout = writer.images["val/cam"]
    assert images.shape == (4, 64, 64, 3) and images.dtype == np.uint8 and layout == "NHWC" and step == 4
    # train.tensorboard=false: never
    Trainer(load_config(None, tiny_run_overrides(tmp_path / "off", "optim.epochs=1", "optim.warm_epochs=0",
                                                 "train.tensorboard=false", "train.eval_interval=0"))).fit()
    assert len(FakeSummaryWriter.made) == 1


def test_tensorboard_asked_for_but_not_installed_names_the_install(tiny_run_overrides, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails, as without the package
    with pytest.raises(ValueError, match=r'train\.tensorboard=true.*pip install -e "\.\[tensorboard\]"'):
        Trainer(load_config(None, tiny_run_overrides(tmp_path / "run", "train.tensorboard=true")))
    Trainer(load_config(None, tiny_run_overrides(tmp_path / "run")))  # by default: JSON lines and CSV only


def _cpp_extension_stderr(tmp_path, code: str) -> str:
    """stderr of ``code`` then importing torch.utils.cpp_extension, with a CUDA toolkit found."""
    script = f"{code}\nimport torch.utils.cpp_extension\n"
    env = {**os.environ, "CUDA_HOME": str(tmp_path)}
    return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600,
                          cwd=tmp_path).stderr


def test_a_cpu_run_does_not_print_the_no_cuda_runtime_warning(tiny_run_overrides, tmp_path):
    """Inductor imports torch.utils.cpp_extension, which warns on every CPU run of a machine
    with a CUDA toolkit; a Trainer silences that one message."""
    if "No CUDA runtime is found" not in _cpp_extension_stderr(tmp_path, "import torch"):
        pytest.skip("torch does not warn here (a GPU, or a CPU-only build)")
    overrides = tiny_run_overrides(tmp_path / "run", "optim.epochs=1", "optim.warm_epochs=0")
    code = f"from fastwsol.config import load_config\nfrom fastwsol.train import Trainer\nTrainer(load_config(None, {overrides!r}))"
    err = _cpp_extension_stderr(tmp_path, code)
    assert "No CUDA runtime is found" not in err and "Traceback" not in err, err


def test_runs_lists_runs_and_shows_a_checkpoint(tiny_checkpoint, tmp_path, capsys):
    run = tiny_checkpoint.parent
    assert main(["runs", str(run.parent)]) == 0
    table = capsys.readouterr().out
    assert table.startswith("| run | epoch | state | best val | test GT-known |")
    row = next(line for line in table.splitlines() if line.startswith(f"| {run.name} |"))
    assert "| 2/2 | tested | max_box_acc_v2 " in row
    assert main(["runs", str(tiny_checkpoint)]) == 0
    shown = capsys.readouterr().out
    epoch = load_checkpoint(tiny_checkpoint)["epoch"]
    assert shown.startswith(f"{tiny_checkpoint}: epoch {epoch} of 2")
    assert f"val metrics of epoch {epoch}" in shown and "config:" in shown and "select_metric: max_box_acc_v2" in shown
    assert main(["runs", str(tmp_path)]) == 0
    assert "no training runs" in capsys.readouterr().out
