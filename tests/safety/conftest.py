"""Helpers of the "never lose a user's file" tests: hash a folder before and after a refusal."""

import hashlib
from pathlib import Path

import pytest


def file_hashes(root: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under ``root`` (a file: itself)."""
    root = Path(root)
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root) if p != root else p.name): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.fixture
def hashes():
    return file_hashes
