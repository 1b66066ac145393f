"""The training loop (docs/method.md §2, §5, §6): warm stage (L_CE + λ_drop·L_drop at the warm batch
size), then the full objective; SGD with two parameter groups and step decay; validation with
the evaluator, the best checkpoint by the configured criterion, a final test of the best.

One step (forward of both paths, the losses, backward) is compiled with ``torch.compile``, one
graph for the warm objective and one for the full objective; ``train.compile=false`` runs the
same function eagerly: the reference step.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import yaml

from fastwsol.checkpoint import changed_keys, describe_changes, restore_rng_states, rng_states
from fastwsol.config import ExperimentConfig, select_metric_problem
from fastwsol.data import loader_from_config, normalize_on_device
from fastwsol.data.metadata import class_names, read_split_metadata
from fastwsol.io import load_checkpoint, save_atomic, write_text_atomic
from fastwsol.models import TwoPathWSOLNet, model_from_config
from fastwsol.objective import LOSS_TERMS, Objective
from fastwsol.progress import Progress
from fastwsol.tables import csv_text
from fastwsol.visualize import heat_overlay


class NonFiniteLossError(RuntimeError):
    """A loss term became NaN/inf: the run stops instead of training on garbage."""


class RunExistsError(ValueError):
    """``out_dir`` already holds a run and neither resuming nor replacing it was asked for."""


# What a run writes into its folder; a folder holding any of them holds a run.
RUN_FILES = ("last.pt", "best.pt", "test_metrics.json", "metrics.jsonl", "metrics.csv", "config.yaml")
TENSORBOARD_INSTALL = 'pip install -e ".[tensorboard]"'
CAM_IMAGES = 4  # validation images whose CAM overlays go to TensorBoard each validation


def recorded_checkpoint(out_dir: str | os.PathLike) -> tuple[Path, dict] | None:
    """(path, state) of the checkpoint recording the run in ``out_dir`` (``last.pt``, else
    ``best.pt``), None when there is none; its ``state["config"]`` is the run's resolved config."""
    for name in ("last.pt", "best.pt"):
        path = Path(out_dir) / name
        if path.is_file():
            return path, load_checkpoint(path)
    return None


# ---------------------------------------------------------------------------- distributed


@dataclass(frozen=True)
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed() -> DistributedContext:
    """torchrun's environment → a process group (NCCL on GPU, gloo on CPU); single process otherwise."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedContext()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return DistributedContext(rank, world_size, local_rank)


def default_device(ctx: DistributedContext) -> torch.device:
    return torch.device("cuda", ctx.local_rank) if torch.cuda.is_available() else torch.device("cpu")


def select_device(setting: str, ctx: DistributedContext) -> torch.device:
    """``train.device``: auto (CUDA when there is one), cpu, cuda (this process's GPU under
    torchrun) or cuda:N (one process)."""
    if setting == "auto":
        return default_device(ctx)
    if setting == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError(f"train.device={setting}: CUDA is not available on this machine; use cpu or auto")
    device = torch.device(setting)
    if device.index is None:
        return torch.device("cuda", ctx.local_rank)
    if ctx.enabled:
        raise ValueError(
            f"train.device={setting} names one GPU, but torchrun gives each process its own (cuda:LOCAL_RANK): "
            f"use cuda or auto"
        )
    if device.index >= torch.cuda.device_count():
        raise ValueError(
            f"train.device={setting}: this machine has {torch.cuda.device_count()} CUDA device(s), "
            f"cuda:0 .. cuda:{torch.cuda.device_count() - 1}"
        )
    return device


def _not_the_cuda_home_note(record: logging.LogRecord) -> bool:
    return "No CUDA runtime is found" not in record.getMessage()


def quiet_cuda_home_warning() -> None:
    """``torch.utils.cpp_extension`` warns "No CUDA runtime is found" when it is imported (by
    Inductor, generating CPU code for a compiled step or op) on a machine with a CUDA toolkit and
    no GPU: true, and nothing a CPU run needs to hear each time. Only that message is dropped."""
    logging.getLogger("torch.utils.cpp_extension").addFilter(_not_the_cuda_home_note)


# ---------------------------------------------------------------------------- optimisation


def build_optimizer(model: TwoPathWSOLNet, config: ExperimentConfig) -> torch.optim.SGD:
    """Pretrained backbone at lr, new layers at lr × multiplier (docs/method.md §6)."""
    o = config.optim
    backbone, new = model.parameter_groups()
    groups = [
        {"params": backbone, "lr": o.lr, "base_lr": o.lr},
        {"params": new, "lr": o.lr * o.new_layer_lr_multiplier, "base_lr": o.lr * o.new_layer_lr_multiplier},
    ]
    return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov, weight_decay=o.weight_decay)


def lr_factor(epoch: int, config: ExperimentConfig) -> float:
    """×factor from each (1-based) decay epoch on; ``epoch`` is 0-based."""
    o = config.optim
    return o.lr_decay_factor ** sum(epoch + 1 >= e for e in o.lr_decay_epochs)


def validates(epoch: int, config: ExperimentConfig) -> bool:
    """Whether the (1-based) ``epoch`` ends with a validation: every ``train.eval_interval``-th
    epoch and the last one, and every epoch from ``train.validate_every_epoch_from`` on."""
    t = config.train
    every_from = t.validate_every_epoch_from is not None and epoch >= t.validate_every_epoch_from
    every_interval = t.eval_interval > 0 and (epoch % t.eval_interval == 0 or epoch == config.optim.epochs)
    return every_from or every_interval


def epoch_ranges(epochs: list[int]) -> str:
    """``[5, 10, 40, 41, 42]`` → ``5, 10, 40-42``."""
    runs: list[list[int]] = []
    for epoch in epochs:
        if runs and epoch == runs[-1][-1] + 1:
            runs[-1].append(epoch)
        else:
            runs.append([epoch])
    return ", ".join(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}" for run in runs)


def set_lr(optimizer: torch.optim.Optimizer, factor: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = group["base_lr"] * factor


def plural(count: int, word: str) -> str:
    """``1 epoch``, ``2 epochs``."""
    return f"{count} {word}{'' if count == 1 else 's'}"


def describe_plan(trainer: Trainer) -> str:
    """What a run will do, where, for how long: printed when it starts (logs have no progress bar)."""
    config, o = trainer.config, trainer.config.optim
    warm_epochs = min(trainer.objective.warm_epochs, o.epochs)
    # the warm stage's loader only when there is one: its batch size may not fit the data otherwise
    steps = {False: trainer.steps_per_epoch(o.batch_size)}
    steps[True] = trainer.steps_per_epoch(o.warm_batch_size) if warm_epochs else 0
    total = warm_epochs * steps[True] + (o.epochs - warm_epochs) * steps[False]
    images = trainer.loader("train", o.batch_size).num_samples
    per_epoch = f"{plural(steps[False], 'step')} of {o.batch_size}"
    if warm_epochs and steps[True] != steps[False]:
        per_epoch = f"{plural(steps[True], 'step')} of {o.warm_batch_size} (warm), then {per_epoch}"
    validated = [epoch for epoch in range(1, o.epochs + 1) if validates(epoch, config)]
    if validated:
        epochs = "every epoch" if len(validated) == o.epochs else f"epochs {epoch_ranges(validated)}"
        validation = f"validation after {epochs}, best by val {config.train.select_metric}"
        if config.train.select_from_epoch > 1:
            validation += f" from epoch {config.train.select_from_epoch} on"
    else:
        validation = "no validation (the last checkpoint is tested)"
    return "\n".join(
        [
            f"fastwsol train: {config.model.name} into {trainer.out_dir}",
            f"  objective: {trainer.objective.describe()}",
            f"  plan: {plural(o.epochs, 'epoch')} × {per_epoch} = {plural(total, 'step')}, "
            f"{plural(images, 'training image')} per epoch; {validation}",
            f"  device: {trainer.device}, backend: {config.train.backend}, "
            f"compile: {'on' if config.train.compile else 'off'}, precision: {config.train.precision}"
            + (f", {plural(trainer.ctx.world_size, 'process')}" if trainer.ctx.enabled else ""),
        ]
    )


def describe_selection(epoch: int, config: ExperimentConfig, record: dict, previous: dict, best: bool) -> str:
    """The selection metric's value and why the epoch became ``[best]`` or not: the value it was
    compared with (``previous``: the best before this epoch)."""
    t = config.train
    value = record[f"val_{t.select_metric}"]
    line = f"{t.select_metric} {value:.2f}"
    if epoch < t.select_from_epoch:
        return f"{line} (selection from epoch {t.select_from_epoch} on)"
    if previous["epoch"] is None:
        return f"{line} [best]" if best else line
    if best:
        return f"{line} [best: above {previous['metric']:.2f} of epoch {previous['epoch']}]"
    return f"{line} (best: {previous['metric']:.2f} of epoch {previous['epoch']})"


def describe_epoch(
    epoch: int, config: ExperimentConfig, objective: Objective, record: dict, best: bool, previous: dict | None = None
) -> str:
    """One line per epoch: losses, speed and, when validated, the val metrics (both contour modes
    and the map diagnostics of fastwsol.evaluation.diagnostics), then the selection metric
    (``train.select_metric``) and why the epoch is ``[best]`` or not (``previous``: the best
    before this epoch)."""
    o = config.optim
    warm = " (warm)" if epoch <= objective.warm_epochs else ""
    losses = " ".join(f"{k} {record[f'loss_{k}']:.3f}" for k in LOSS_TERMS)
    line = (
        f"epoch {epoch}/{o.epochs}{warm}: loss {record['loss_total']:.3f} ({losses}), "
        f"{record['images_per_s']:.1f} img/s, {record['seconds']:.0f} s"
    )
    previous = previous or {"metric": -math.inf, "epoch": None}
    if "val_pxap" in record:  # a split with GT masks
        line += (
            f"; val PxAP {record['val_pxap']:.1f}, PIoU {record['val_piou']:.1f}, top-1 {record['val_top1_cls']:.1f}; "
            + describe_selection(epoch, config, record, previous, best)
        )
    elif "val_gt_known_loc" in record:
        line += (
            f"; val GT-known {record['val_gt_known_loc']:.1f}/{record['val_gt_known_loc_single']:.1f} "
            f"(multi/single contour), MaxBoxAccV2 {record['val_max_box_acc_v2']:.1f}/"
            f"{record['val_max_box_acc_v2_single']:.1f}, top-1 {record['val_top1_cls']:.1f}, "
            f"inverted {record['val_inverted_pct']:.1f} %, peak in GT {record['val_peak_in_gt_pct']:.1f} %; "
            + describe_selection(epoch, config, record, previous, best)
        )
    return line


def compile_options(model: torch.nn.Module, config: ExperimentConfig) -> dict:
    """Inductor options of the compiled step.

    On CPU, Inductor turns every convolution of a graph to channels_last ("layout
    optimization"), whatever the model's layout. The compiled step keeps the layout the config
    asks for (``train.channels_last``) instead, so compiled and eager run the same oneDNN
    convolutions: on this project's AVX2 CPU the channels_last convolution backward is slower
    than the blocked NCHW one for VGG16 at 224² (the forced-channels_last compiled step ran at
    0.79-0.85× the eager one; NCHW: 0.97-0.98×), while the BatchNorm'd vgg_small gains from
    channels_last (set it). ``bench/bench_train_step.py`` times both layouts, eager and compiled.
    On CUDA, Inductor's own heuristics decide.
    """
    on_cpu = all(p.device.type == "cpu" for p in model.parameters())
    return {"layout_optimization": config.train.channels_last} if on_cpu else {}


class TrainStep:
    """forward (both paths) → loss terms, as one function, compiled (``train.compile``) or
    eager; the backward of a compiled forward is compiled too (AOTAutograd).

    ``__call__`` returns the detached terms ``[total, ce, drop, sim, norm]`` and has already
    run backward, unless a term is non-finite (then nothing is touched and the caller stops).

    ``compiler``: torch.compile's backend; ``"aot_eager"`` traces the same graphs (Dynamo, AOT
    autograd) without generating code, for a CPU rehearsal (``fastwsol check-gpu --dry-run``).
    """

    def __init__(self, model: torch.nn.Module, fc_weight: torch.Tensor, config: ExperimentConfig, *, uint8_input: bool,
                 compiler: str = "inductor"):
        self.model, self.fc_weight, self.config = model, fc_weight, config
        self.uint8_input = uint8_input
        if config.train.compile:
            options = compile_options(model, config) if compiler == "inductor" else None
            self._forwards = {full: torch.compile(self._make(full), backend=compiler, options=options)
                              for full in (False, True)}
        else:
            self._forwards = {full: self._make(full) for full in (False, True)}

    def _make(self, full: bool):
        config = self.config
        objective = Objective.from_config(config)
        autocast = config.train.precision == "bf16"

        def forward_losses(images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            if self.uint8_input:
                images = normalize_on_device(images)
            if config.train.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device_type=images.device.type, dtype=torch.bfloat16, enabled=autocast):
                out = self.model(images, backend=config.train.backend)
            terms = objective.losses(out, labels, self.fc_weight, full=full, backend=config.train.backend)
            total = objective.total(terms)
            return total, torch.stack([total.detach(), *(terms[k].detach().float() for k in LOSS_TERMS)])

        return forward_losses

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, *, full: bool) -> torch.Tensor:
        total, values = self._forwards[full](images, labels)
        values = values.cpu()
        if torch.isfinite(values).all():
            total.backward()
        return values


# ---------------------------------------------------------------------------- logging


def tensorboard_writer_class(setting: bool | None):
    """TensorBoard's ``SummaryWriter``, or None: ``train.tensorboard`` None = when the
    tensorboard package is installed, True = required (an error naming the install when it is
    not), False = never."""
    if setting is False:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:
        if setting:
            raise ValueError(
                f"train.tensorboard=true, but the tensorboard package is not installed: {TENSORBOARD_INSTALL}"
            ) from exc
        return None
    return SummaryWriter


class MetricsLog:
    """``out_dir/metrics.jsonl`` (every record), ``out_dir/metrics.csv`` (a row per epoch, made
    from the JSON lines) and TensorBoard scalars and CAM images (``train.tensorboard``); rank 0
    only. The folder is made by the first write, so a run that fails to start leaves none."""

    def __init__(self, out_dir: Path, enabled: bool, tensorboard: bool | None = None):
        self.enabled, self.out_dir = enabled, out_dir
        self.path, self.csv_path = out_dir / "metrics.jsonl", out_dir / "metrics.csv"
        self._writer_class = tensorboard_writer_class(tensorboard) if enabled else None
        self._writer = None

    @property
    def tensorboard(self):
        """The SummaryWriter (made on first use), None when TensorBoard is off."""
        if self._writer is None and self._writer_class is not None:
            self._writer = self._writer_class(str(self.out_dir / "tensorboard"))
        return self._writer

    def write(self, record: dict, step: int) -> None:
        if not self.enabled:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record) + "\n")
        kind = record.get("type", "train")
        if kind == "epoch":
            self._write_csv()
        if self.tensorboard is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key not in ("epoch", "step"):
                    self.tensorboard.add_scalar(f"{kind}/{key}", value, step)

    def _write_csv(self) -> None:
        records = [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
        rows = [{k: v for k, v in r.items() if k != "type"} for r in records if r.get("type") == "epoch"]
        write_text_atomic(self.csv_path, csv_text(rows))

    def images(self, tag: str, images: np.ndarray, step: int) -> None:
        """N×H×W×3 uint8 pictures to TensorBoard (nothing when it is off)."""
        if self.enabled and len(images) and self.tensorboard is not None:
            self.tensorboard.add_images(tag, images, step, dataformats="NHWC")

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


# ---------------------------------------------------------------------------- the loop


class StopRequested(Exception):
    pass


class Trainer:
    """Runs ``config`` to completion, or resumes it from ``out_dir/last.pt`` (``resume``).

    A new run refuses an ``out_dir`` that holds another run (:data:`RUN_FILES`) unless
    ``overwrite``, which removes that run's files (and nothing else) first.
    """

    def __init__(
        self,
        config: ExperimentConfig,
        *,
        resume: bool = False,
        overwrite: bool = False,
        ctx: DistributedContext | None = None,
    ):
        quiet_cuda_home_warning()
        self.config = config
        self.ctx = ctx or init_distributed()
        self.device = select_device(config.train.device, self.ctx)
        self.out_dir = Path(config.train.out_dir)
        if resume and overwrite:
            raise ValueError("--resume continues the run in train.out_dir and --overwrite replaces it: give one")
        if not resume:
            self._refuse_existing_run(overwrite)
        elif not (self.out_dir / "last.pt").is_file():
            raise FileNotFoundError(
                f"--resume: {self.out_dir / 'last.pt'} does not exist, so there is no run in {self.out_dir} to continue"
            )
        self.log = MetricsLog(self.out_dir, self.ctx.is_main, config.train.tensorboard)
        torch.manual_seed(config.train.seed + self.ctx.rank)
        self.objective = Objective.from_config(config)
        # the warm batch size matters only when there is a warm stage
        batch_sizes = {"optim.batch_size": config.optim.batch_size}
        if self.objective.warm_epochs:
            batch_sizes["optim.warm_batch_size"] = config.optim.warm_batch_size
        if any(size % self.ctx.world_size for size in batch_sizes.values()):
            raise ValueError(
                " and ".join(f"{key} ({size})" for key, size in batch_sizes.items())
                + f" must be divisible by the world size {self.ctx.world_size}"
            )
        self._check_select_metric()
        self._loaders: dict[tuple, object] = {}
        train_loader = self.loader("train", self.batch_size(0))
        self.num_classes = int(train_loader.metadata.labels.max()) + 1
        self.class_names = class_names(config.data.metadata_root, config.data.dataset, train_loader.metadata)
        self.model = model_from_config(config, self.num_classes).to(self.device)
        if config.train.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer = build_optimizer(self.model, config)
        self.step_model = self.model
        if self.ctx.enabled:
            self.step_model = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.ctx.local_rank] if self.device.type == "cuda" else None
            )
        self.train_step = TrainStep(self.step_model, self.model.fc.weight, config, uint8_input=True)
        self.epoch, self.step_in_epoch, self.global_step = 0, 0, 0
        # the running sums of the epoch's loss terms: in last.pt, so a resumed epoch's mean covers all its steps
        self.epoch_loss_sums: torch.Tensor | None = None
        self.best = {"metric": -math.inf, "epoch": None}
        self._stop_signal: int | None = None
        self._output_closed = False
        if resume:
            self._resume()
        elif overwrite:  # only now that the new run is set up: a bad config leaves the old run as it was
            self._remove_previous_run()

    @property
    def finished(self) -> bool:
        """Every epoch is trained (a resumed finished run has only its test left, if that)."""
        return self.epoch >= self.config.optim.epochs

    def _check_select_metric(self) -> None:
        """``train.select_metric`` must score the ground truth (boxes or masks) of the split the
        run evaluates, as its metadata says (the config knows only wsolevaluation's datasets)."""
        d = self.config.data
        split = "val" if any(validates(e, self.config) for e in range(1, self.config.optim.epochs + 1)) else "test"
        localization = read_split_metadata(d.metadata_root, d.dataset, split).localization
        problem = select_metric_problem(self.config.train.select_metric, localization, f"{d.dataset}'s {split} split")
        if problem is not None:
            raise ValueError(problem)

    # -- data
    def batch_size(self, epoch: int) -> int:
        """The global batch of 0-based ``epoch``: the warm stage's or the full objective's."""
        o = self.config.optim
        return o.warm_batch_size if self.objective.is_warm_epoch(epoch) else o.batch_size

    def loader(self, split: str, batch_size: int):
        """Loaders are cached per (split, batch size): the warm/full switch reuses them."""
        key = (split, batch_size)
        if key not in self._loaders:
            try:
                self._loaders[key] = loader_from_config(
                    self.config,
                    split,
                    batch_size=batch_size // self.ctx.world_size if split == "train" else self.config.eval.batch_size,
                    device=self.device,
                    shard_id=self.ctx.rank,
                    num_shards=self.ctx.world_size,
                )  # uint8: normalised inside the (compiled) step
            except ValueError as exc:
                if split != "train":
                    raise
                setting = "optim.batch_size" if batch_size == self.config.optim.batch_size else "optim.warm_batch_size"
                raise ValueError(f"{setting}={batch_size}: {exc}") from exc
        return self._loaders[key]

    def steps_per_epoch(self, batch_size: int) -> int:
        loader = self.loader("train", batch_size)
        cap = self.config.train.max_steps_per_epoch
        return len(loader) if cap is None else min(len(loader), cap)

    def _existing_run_files(self) -> list[str]:
        return [name for name in RUN_FILES if (self.out_dir / name).exists()]

    def _refuse_existing_run(self, overwrite: bool) -> None:
        existing = self._existing_run_files()
        if not existing or overwrite:
            return
        try:
            recorded, unreadable = recorded_checkpoint(self.out_dir), ""
        except ValueError as exc:
            recorded, unreadable = None, f"; {exc}"
        elsewhere = "train into another --out-dir, or replace it with --overwrite"
        if recorded is None or recorded[0].name != "last.pt":  # stopped before its first last.pt
            advice = f"it has no last.pt to resume from: {elsewhere}"
        elif recorded[1]["epoch"] >= self.config.optim.epochs:
            advice = f"it is finished: {elsewhere}"
        else:
            advice = f"continue it with --resume, {elsewhere}"
        raise RunExistsError(
            f"{self.out_dir} already holds a run ({', '.join(existing)}{unreadable or self._describe(recorded)}); "
            f"{advice}"
        )

    def _remove_previous_run(self) -> None:
        """The files an earlier run wrote here (:data:`RUN_FILES`, TensorBoard events), nothing else."""
        existing = self._existing_run_files()
        if not (existing and self.ctx.is_main):  # only rank 0 writes the folder, so only it clears it
            return
        events = sorted((self.out_dir / "tensorboard").glob("events.out.tfevents.*"))
        for path in [*(self.out_dir / name for name in existing), *events]:
            path.unlink()
        print(
            f"fastwsol train: --overwrite: removed the previous run's {', '.join(existing)}"
            f"{' and its TensorBoard events' if events else ''} from {self.out_dir}",
            file=sys.stderr,
        )

    def _describe(self, recorded: tuple[Path, dict] | None) -> str:
        """'; last.pt at epoch E of N, same settings' or '..., other settings: ...' for the refusal."""
        if recorded is None:
            return ""
        path, state = recorded
        changes = changed_keys(state["config"], self.config.to_dict())
        where = f"; {path.name} at epoch {state['epoch']} of {state['config'].get('optim', {}).get('epochs')}"
        return where + (f", other settings: {describe_changes(changes)}" if changes else ", same settings")

    # -- checkpoints
    def checkpoint_state(self) -> dict:
        mid_epoch = self.step_in_epoch > 0 and self.epoch_loss_sums is not None
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "global_step": self.global_step,
            "epoch_loss_sums": self.epoch_loss_sums.clone() if mid_epoch else None,
            "best": self.best,
            "rng": self._all_rng_states(),
            "config": self.config.to_dict(),
            "num_classes": self.num_classes,
            "class_names": self.class_names,  # shown by evaluate's pictures and localize ({} when unnamed)
            "workdir": os.getcwd(),  # the config's relative data paths are relative to it
            "lr_factor": lr_factor(self.epoch, self.config),
        }

    def _all_rng_states(self) -> list[dict]:
        """Every rank's RNG states (rank 0 writes them all), so a resumed run draws as before."""
        if not self.ctx.enabled:
            return [rng_states()]
        gathered = [None] * self.ctx.world_size
        dist.all_gather_object(gathered, rng_states())
        return gathered

    def save(self, name: str) -> Path:
        path = self.out_dir / name
        state = self.checkpoint_state()  # collective under DDP: gathers every rank's RNG states
        if self.ctx.is_main:
            save_atomic(state, path)
        return path

    def save_config(self) -> Path:
        """The run's settings as ``out_dir/config.yaml``, readable and usable as ``--config``."""
        path = self.out_dir / "config.yaml"
        if self.ctx.is_main:
            text = yaml.safe_dump(self.config.to_dict(), sort_keys=False)
            write_text_atomic(path, f"# the settings of the run in {self.out_dir}, written by fastwsol train\n{text}")
        return path

    def _resume(self) -> None:
        path = self.out_dir / "last.pt"
        state = load_checkpoint(path)
        changes = changed_keys(state["config"], self.config.to_dict())
        if changes and self.ctx.is_main:
            print(
                f"fastwsol train: resuming {path} with changed settings: {describe_changes(changes)}", file=sys.stderr
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.epoch, self.step_in_epoch, self.global_step = state["epoch"], state["step_in_epoch"], state["global_step"]
        self.epoch_loss_sums = state.get("epoch_loss_sums")  # None: a fresh epoch, or a checkpoint without sums
        self.best = state["best"]
        if len(state["rng"]) != self.ctx.world_size:
            raise ValueError(
                f"{path} was written by {len(state['rng'])} process(es); "
                f"resume it with as many, not {self.ctx.world_size}"
            )
        restore_rng_states(state["rng"][self.ctx.rank])
        if self.ctx.is_main and not self.finished:
            print(
                f"fastwsol train: resuming from {path} at epoch {self.epoch + 1} step {self.step_in_epoch} "
                f"(global step {self.global_step})",
                file=sys.stderr,
                flush=True,
            )

    # -- output
    def say(self, text: str) -> None:
        """A line on stderr from rank 0. A closed pipe (``2>&1 | head``) stops the run after the
        current step, its checkpoint written, as a signal does, instead of killing it between two
        of its files."""
        if self.ctx.is_main:
            self._guard_output(print, text, file=sys.stderr, flush=True)

    def _guard_output(self, write, *args, **kwargs) -> None:
        if self._output_closed:
            return
        try:
            write(*args, **kwargs)
        except BrokenPipeError:
            self._output_closed = True
            # what is still buffered for the closed pipe, or written to it, goes nowhere
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stderr.fileno())
            self._stop_signal = signal.SIGPIPE

    # -- signals
    def _on_signal(self, signum, _frame) -> None:
        self._stop_signal = signum  # acted on after the current step

    def _stop_requested(self) -> bool:
        """A signal seen by any rank stops every rank after the same step."""
        stop = self._stop_signal is not None
        if self.ctx.enabled:
            flag = torch.tensor([self._stop_signal or 0], device=self.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            self._stop_signal = int(flag.item()) or None
            stop = self._stop_signal is not None
        return stop

    def _install_signal_handlers(self):
        previous = {}
        for signum in (signal.SIGINT, signal.SIGTERM):
            try:
                previous[signum] = signal.signal(signum, self._on_signal)
            except ValueError:  # not the main thread
                pass
        return previous

    # -- one epoch
    def _train_epoch(self) -> dict[str, float]:
        config = self.config
        full = not self.objective.is_warm_epoch(self.epoch)
        batch_size = self.batch_size(self.epoch)
        loader = self.loader("train", batch_size)
        loader.set_epoch(self.epoch)
        set_lr(self.optimizer, lr_factor(self.epoch, config))
        self.model.train()
        steps = self.steps_per_epoch(batch_size)
        done_before = self.step_in_epoch
        # a resumed epoch continues its sums; a checkpoint without them averages the steps after the resume
        summed_from = 0 if done_before == 0 or self.epoch_loss_sums is not None else done_before
        if done_before == 0 or self.epoch_loss_sums is None:
            self.epoch_loss_sums = torch.zeros(1 + len(LOSS_TERMS))
        sums = self.epoch_loss_sums
        description = f"epoch {self.epoch + 1}/{config.optim.epochs}" + ("" if full else " (warm)")
        if done_before:
            description += f" from step {done_before}"
        progress = Progress(steps - done_before, description, enabled=config.train.progress and self.ctx.is_main)
        started, images_seen = time.perf_counter(), 0
        for index, batch in enumerate(loader):
            if index < done_before:  # resume mid-epoch: the plan is deterministic, skip what was done
                continue
            if index >= steps:
                break
            self.optimizer.zero_grad(set_to_none=True)
            values = self.train_step(batch["images"], batch["labels"], full=full)
            if not torch.isfinite(values).all():
                named = ", ".join(f"L_{k}={v:.4g}" for k, v in zip(("total", *LOSS_TERMS), values.tolist()))
                raise NonFiniteLossError(
                    f"non-finite loss at epoch {self.epoch + 1}, step {self.global_step} "
                    f"(step {index} of the epoch): {named}"
                )
            self.optimizer.step()
            self.step_in_epoch, self.global_step = index + 1, self.global_step + 1
            sums += values
            images = batch["images"].shape[0] * self.ctx.world_size
            images_seen += images
            rate = images_seen / max(time.perf_counter() - started, 1e-9)
            mean = sums / (self.step_in_epoch - summed_from)
            self._guard_output(progress.update, 1, images=images, postfix=f"loss {mean[0].item():.3f}")
            if self.global_step % config.train.log_interval == 0:
                record = {
                    "type": "train",
                    "epoch": self.epoch + 1,
                    "step": self.global_step,
                    "images_per_s": rate,
                    "lr": self.optimizer.param_groups[0]["lr"],
                }
                record.update({f"loss_{k}": v for k, v in zip(("total", *LOSS_TERMS), values.tolist())})
                self.log.write(record, self.global_step)
            if self._stop_requested() and self.step_in_epoch < steps:
                progress.close()
                raise StopRequested
        progress.close()
        count = max(self.step_in_epoch - summed_from, 1)
        seconds = time.perf_counter() - started
        losses = {f"loss_{k}": v for k, v in zip(("total", *LOSS_TERMS), (sums / count).tolist())}
        return {**losses, "images_per_s": images_seen / max(seconds, 1e-9), "seconds": seconds}

    def evaluate(self, split: str) -> dict:
        """The split's metrics, with progress (``validate epoch N`` / ``test``); a validation
        also sends the CAMs of its first images to TensorBoard, when that is on."""
        from fastwsol.evaluate import evaluate_model

        loader = self.loader(split, self.config.eval.batch_size)
        name = f"validate epoch {self.epoch}" if split == "val" else split
        overlays = []

        def per_batch(batch, scoremaps, _logits):
            self._guard_output(progress.update, 1, images=batch["images"].shape[0] * self.ctx.world_size)
            if split == "val" and self.log.tensorboard is not None and len(overlays) < CAM_IMAGES:
                images = batch["images"][: CAM_IMAGES - len(overlays)].permute(0, 2, 3, 1).cpu().numpy()
                maps = scoremaps[: len(images)].float().cpu().numpy()
                overlays.extend(heat_overlay(image, scoremap) for image, scoremap in zip(images, maps))

        enabled = self.config.train.progress and self.ctx.is_main
        with Progress(len(loader), name, enabled=enabled) as progress:
            metrics = evaluate_model(self.model, loader, self.config, self.ctx, on_batch=per_batch)
        if overlays:
            self.log.images("val/cam", np.stack(overlays), self.global_step)
        return metrics

    def fit(self) -> dict:
        """Train the remaining epochs, validate, keep the best, test it. Returns the test metrics.
        A resumed run that is finished and tested is not trained nor tested again."""
        config = self.config
        if self.finished:
            return self._finish_resumed()
        previous = self._install_signal_handlers()
        self.say(describe_plan(self))
        self.save_config()
        try:
            while self.epoch < config.optim.epochs:
                try:
                    losses = self._train_epoch()
                except StopRequested:
                    self._stop(f"at epoch {self.epoch + 1}, step {self.step_in_epoch} of the epoch")
                self.epoch += 1
                self.step_in_epoch = 0
                record = {"type": "epoch", "epoch": self.epoch, **losses}
                improved, best_before = False, dict(self.best)
                if validates(self.epoch, config):
                    metrics = self.evaluate("val")
                    record.update({f"val_{k}": v for k, v in metrics.items() if isinstance(v, (int, float))})
                    selectable = self.epoch >= config.train.select_from_epoch
                    if selectable and metrics[config.train.select_metric] > self.best["metric"]:
                        improved = True
                        self.best = {
                            "metric": metrics[config.train.select_metric],
                            "epoch": self.epoch,
                            "threshold": metrics["best_threshold"],  # localize uses it
                        }
                        self.save("best.pt")
                # the files first, then the line: output that fails (a closed pipe) cannot leave
                # best.pt without the last.pt of the same epoch
                self.log.write(record, self.global_step)
                self.save("last.pt")
                # a line per epoch whether or not stderr is a terminal
                self.say(describe_epoch(self.epoch, config, self.objective, record, improved, best_before))
                if self._stop_requested():
                    self._stop(f"after epoch {self.epoch}")
            return self.final_test()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            self.log.close()

    def _stop(self, where: str):
        """A stop request (a signal, a closed output pipe) honoured: last.pt written, then exit."""
        path = self.save("last.pt")
        signame = signal.Signals(self._stop_signal).name
        self.say(
            f"\nfastwsol train: stopped by {signame} {where}; checkpoint written to {path}.\n"
            f"Resume with the same command plus --resume."
        )
        raise SystemExit(128 + self._stop_signal) from None

    def _finish_resumed(self) -> dict:
        """``--resume`` of a run with every epoch trained: its test metrics, tested only if it
        was not (a stop during the final test)."""
        o, tested = self.config.optim, self.out_dir / "test_metrics.json"
        if tested.is_file():
            self.say(
                f"fastwsol train: the run in {self.out_dir} is finished (epoch {self.epoch} of {o.epochs}) "
                f"and tested ({tested}); nothing to resume"
            )
            return json.loads(tested.read_text())
        self.say(
            f"fastwsol train: the run in {self.out_dir} is trained (epoch {self.epoch} of {o.epochs}); "
            f"running its final test"
        )
        try:
            return self.final_test()
        finally:
            self.log.close()

    def final_test(self) -> dict:
        """Evaluate the best checkpoint (the last one when no validation ran) on ``test``."""
        best_path = self.out_dir / "best.pt"
        if self.best["epoch"] is not None and best_path.is_file():
            self.model.load_state_dict(load_checkpoint(best_path)["model"])
        metrics = self.evaluate("test")
        metrics["checkpoint_epoch"] = self.best["epoch"] or self.epoch
        if self.ctx.is_main:
            write_text_atomic(self.out_dir / "test_metrics.json", json.dumps(metrics, indent=2))
        self.log.write(
            {"type": "test", **{k: v for k, v in metrics.items() if isinstance(v, (int, float))}}, self.global_step
        )
        return metrics
