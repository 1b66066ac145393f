"""Checkpoints: reading one back with clear errors, and the RNG states a resumed run restores.
They are written with ``fastwsol.io.save_atomic`` (a kill during a save never destroys the
previous checkpoint)."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

REQUIRED_KEYS = ("model", "config", "epoch")


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint written by ``fastwsol.io.save_atomic``; clear errors for a missing or foreign file."""
    path = Path(path)
    if path.is_dir():
        found = [name for name in ("best.pt", "last.pt") if (path / name).is_file()]
        raise FileNotFoundError(f"checkpoint {str(path)!r} is a folder; give a checkpoint file"
                                + (f", e.g. {path / found[0]}" if found else " (RUN/best.pt or RUN/last.pt)"))
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise ValueError(f"checkpoint {str(path)!r} is not readable: {exc}") from exc
    if not isinstance(state, dict) or any(key not in state for key in REQUIRED_KEYS):
        raise ValueError(f"checkpoint {str(path)!r} is not a fastwsol checkpoint (needs keys {REQUIRED_KEYS})")
    return state


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
