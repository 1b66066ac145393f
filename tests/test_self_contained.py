"""The repository reads nothing outside itself: a clone in an empty folder must work."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Data (metadata lists, measured figures), the coordinator-owned README and this file (its
# detector cases are escapes on purpose) are not scanned.
NOT_SCANNED = ("fastwsol/metadata/", "bench/results/", "README.md", "tests/test_self_contained.py")
UP_DIR = re.compile(r"(?<![\w.])\.\.[/\\]")
ABSOLUTE = re.compile(r"(?<![\w.])/(?:work|home|mnt|scratch)/")
# Path(__file__)[.resolve()][.parents[k]][.parent...]: how many folders up from the file.
FILE_ANCESTOR = re.compile(r"Path\(__file__\)(?:\.resolve\(\))?((?:\.parents\[\d+\])?(?:\.parent\b)*)")


def levels_up(chain: str) -> int:
    match = re.match(r"\.parents\[(\d+)\]", chain)
    return (int(match.group(1)) + 1 if match else 0) + chain.count(".parent") - (1 if match else 0)


def outside_references(relative: str, text: str) -> list[str]:
    """Each line of ``text`` (a file at ``relative`` in the repository) that reaches outside it."""
    depth = len(Path(relative).parts)  # levels_up == depth is the repository root
    found = []
    for lineno, line in enumerate(text.splitlines(), 1):
        escapes = [m.group(0) for m in UP_DIR.finditer(line)] + [m.group(0) for m in ABSOLUTE.finditer(line)]
        escapes += [m.group(0) for m in FILE_ANCESTOR.finditer(line) if levels_up(m.group(1)) > depth]
        if escapes:
            found.append(f"{relative}:{lineno}: {escapes[0]!r} in {line.strip()!r}")
    return found


def tracked_files() -> list[str]:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout: the tracked files are unknown")
    listing = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    return [f for f in listing.decode().split("\0") if f and not f.startswith(NOT_SCANNED)]


def test_no_tracked_file_refers_outside_the_repository():
    found = []
    for relative in tracked_files():
        path = REPO / relative
        if path.is_symlink():
            target = (path.parent / path.readlink()).resolve()
            if not target.is_relative_to(REPO):
                found.append(f"{relative}: a link to {target}")
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, IsADirectoryError, FileNotFoundError):
            continue
        found += outside_references(relative, text)
    assert not found, "references outside the repository:\n" + "\n".join(found)


@pytest.mark.parametrize(
    "relative, line, escapes",
    [
        ("tests/conftest.py", 'SHARED = Path(__file__).resolve().parents[1].parent / "shared"', True),
        ("tests/conftest.py", "ROOT = Path(__file__).resolve().parents[1]", False),
        ("fastwsol/cli.py", "Path(__file__).resolve().parents[2]", True),
        ("fastwsol/data/metadata.py", 'Path(__file__).resolve().parent.parent / "metadata"', False),
        ("fastwsol/data/metadata.py", "Path(__file__).parent.parent.parent.parent", True),
        ("configs/cub.yaml", "  metadata_root: ../shared/data/wsol-metadata", True),
        ("bench/b.py", 'open("/work/shared/x")', True),
        ("configs/cub.yaml", "  metadata_root: builtin", False),
    ],
)
def test_outside_reference_detector(relative, line, escapes):
    """The scan itself: each kind of escape is caught, paths inside the repository are not."""
    assert bool(outside_references(relative, line)) == escapes


def test_builtin_metadata_reads():
    from fastwsol.data import BUILTIN_METADATA_ROOT, read_split_metadata

    assert BUILTIN_METADATA_ROOT.is_relative_to(Path(__import__("fastwsol").__file__).parent)
    for dataset, split, count in [("CUB", "train", 5994), ("CUB", "val", 1000), ("CUB", "test", 5794),
                                  ("ILSVRC", "val", 10000), ("ILSVRC", "test", 50000)]:
        meta = read_split_metadata("builtin", dataset, split)
        assert len(meta) == count and meta.localization == "boxes"
    for split, count in [("val", 2500), ("test", 5000)]:
        meta = read_split_metadata("builtin", "OpenImages", split)
        assert len(meta) == count and meta.localization == "masks" and meta.sizes is None
    train = read_split_metadata("builtin", "OpenImages", "train", require_localization=False)
    assert len(train) == 29819 and train.localization is None
    assert (BUILTIN_METADATA_ROOT / "NOTICE").is_file()


def test_builtin_names_the_missing_split():
    from fastwsol.data import read_split_metadata

    with pytest.raises(FileNotFoundError, match=r"builtin has no ILSVRC/train.*fastwsol prepare imagenet"):
        read_split_metadata("builtin", "ILSVRC", "train")
