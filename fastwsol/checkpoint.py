"""Checkpoints: the trained model and config one holds, the settings two runs differ in, and the
RNG states a resumed run restores. They are written with ``fastwsol.io.save_atomic`` (a kill
during a save never destroys the previous checkpoint) and read with ``fastwsol.io.load_checkpoint``."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fastwsol.config import ExperimentConfig, apply_values, validate
from fastwsol.io import load_checkpoint
from fastwsol.models import model_from_config


@dataclass
class TrainedModel:
    model: torch.nn.Module
    config: object  # ExperimentConfig of the run
    threshold: float | None  # the CAM threshold (GT-known-optimal) validated at the run's best epoch, if any
    path: Path
    class_names: dict[int, str]  # label -> name ({} when the run's metadata names none)
    workdir: Path | None  # where the run was made: its config's relative data paths start there
    epoch: int = 0  # epochs trained into these weights
    threshold_epoch: int | None = None  # the epoch whose validation chose ``threshold`` (the run's best)


def load_trained(checkpoint: str | os.PathLike, device: str | torch.device = "cpu") -> TrainedModel:
    """The model of a ``fastwsol train`` checkpoint, in eval mode (no weights are downloaded)."""
    state = load_checkpoint(checkpoint)
    config = config_from_dict(state["config"])
    model = model_from_config(config, state["num_classes"], load_weights=False)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise ValueError(f"checkpoint {checkpoint}: weights do not fit {config.model.name}: {exc}") from exc
    best = state.get("best") or {}
    workdir = Path(state["workdir"]) if state.get("workdir") else None
    return TrainedModel(
        model.to(device).eval(),
        config,
        best.get("threshold"),
        Path(checkpoint),
        state.get("class_names") or {},
        workdir,
        epoch=int(state["epoch"]),
        threshold_epoch=best.get("epoch") if best.get("threshold") is not None else None,
    )


def rng_states() -> dict:
    states = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


# Settings that say where or how visibly a run is made, not what it trains: two runs that
# differ only in these are the same run (a moved folder, another terminal, another GPU).
RUN_ONLY_KEYS = frozenset(
    {"train.out_dir", "train.progress", "train.log_interval", "train.device", "train.tensorboard", "data.num_threads"}
)


def changed_keys(recorded: dict, current: dict, ignore=RUN_ONLY_KEYS) -> dict[str, tuple]:
    """``{"section.key": (recorded value, current value)}`` for every setting that differs
    between two ``ExperimentConfig.to_dict()``, sorted by key; the one comparison behind resume,
    reuse and overwrite decisions. A key missing on one side counts as its default (a config
    recorded before the key existed ran as its default does), or as ``None`` if it has none."""
    defaults = ExperimentConfig().to_dict()
    differ = {}
    for section in sorted(set(recorded) | set(current)):
        old, new = recorded.get(section) or {}, current.get(section) or {}
        default = defaults.get(section, {})
        for key in sorted(set(old) | set(new)):
            dotted = f"{section}.{key}"
            before, after = old.get(key, default.get(key)), new.get(key, default.get(key))
            if dotted not in ignore and before != after:
                differ[dotted] = (before, after)
    return differ


def describe_changes(changes: dict[str, tuple]) -> str:
    """``changed_keys``' result on one line: ``optim.lr 0.01 -> 0.004, ...``."""
    return ", ".join(f"{key} {old!r} -> {new!r}" for key, (old, new) in changes.items())


def _upgrade_checkpoint_config(values: dict) -> dict:
    """Checkpoints written before ``model.method`` named vanilla CAM ``<backbone>_cam``: the
    model had no dropped path. With λ_sim = λ_norm = 0 that run was vanilla CAM; otherwise it
    was the method's ablation row without L_drop (λ_drop = 0 builds no dropped path either)."""
    model, loss = dict(values.get("model", {})), dict(values.get("loss", {}))
    name = model.get("name")
    if not (isinstance(name, str) and name.endswith("_cam") and "method" not in model):
        return values
    model["name"] = name.removesuffix("_cam")
    if loss.get("lambda_sim") or loss.get("lambda_norm"):
        model["method"], loss["lambda_drop"] = "bridging_gap", 0.0
    else:
        model["method"] = "cam"
    return {**values, "model": model, "loss": loss}


def config_from_dict(values: dict) -> ExperimentConfig:
    """Rebuild a config saved in a checkpoint (older checkpoints' ``_cam`` names are mapped)."""
    config = ExperimentConfig()
    apply_values(config, _upgrade_checkpoint_config(values), "checkpoint config")
    validate(config)
    return config
