"""Files: writing atomically (into a temporary sibling, then renamed over the target, so a kill
during a write never leaves a half-written file nor destroys the previous one), and reading a
checkpoint back with clear errors."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

_UMASK = os.umask(0o022)
os.umask(_UMASK)


@contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "wb", *, durable: bool = True):
    """Open a temporary sibling of ``path`` for writing; on success rename it over ``path``, on
    any failure remove it (``path`` keeps its old content). ``durable``: fsync before the rename,
    so the new content also survives a power loss (checkpoints, results); ``False`` for many
    small files that are simply written again if lost (the synthetic dataset's JPEGs)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp's 0600 would make every output private
        with os.fdopen(fd, mode) as handle:
            yield handle
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_atomic(obj, path: str | os.PathLike) -> None:
    """``torch.save`` that never leaves a half-written file at ``path``."""
    import torch

    with atomic_file(path) as handle:
        torch.save(obj, handle)


def write_bytes_atomic(path: str | os.PathLike, data: bytes, *, durable: bool = True) -> None:
    with atomic_file(path, durable=durable) as handle:
        handle.write(data)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    write_bytes_atomic(path, text.encode())


CHECKPOINT_KEYS = ("model", "config", "epoch")  # what every fastwsol checkpoint holds


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint written by :func:`save_atomic`; clear errors for a missing or foreign file."""
    import torch

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
    if not isinstance(state, dict) or any(key not in state for key in CHECKPOINT_KEYS):
        raise ValueError(f"checkpoint {str(path)!r} is not a fastwsol checkpoint (needs keys {CHECKPOINT_KEYS})")
    return state


def check_writable_folder(folder: str | os.PathLike, what: str) -> Path:
    """Create ``folder`` (with its parents) and write and remove a temporary file there, so a
    command finds an output it cannot write before its work rather than after it. ``what``
    names the folder in the error (e.g. ``--out``)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"{what} {folder} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".write-check.", dir=folder)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise OSError(f"{what} {folder}: cannot write there ({exc.strerror or exc})") from exc
    return folder
