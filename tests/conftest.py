"""Test-run settings. Triton picks interpreter-or-compiler when a @triton.jit function is
defined, so TRITON_INTERPRET must be set before any kernel module is imported; this is the
test run's choice (set TRITON_INTERPRET=0 to test the compiled kernels on a GPU)."""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
WSOL_METADATA = SHARED / "data" / "wsol-metadata"


@pytest.fixture(scope="session")
def wsol_metadata_root() -> Path:
    """The real wsolevaluation metadata shipped in ../shared (present in CI)."""
    if not WSOL_METADATA.is_dir():
        pytest.fail(f"the shared metadata is missing: {WSOL_METADATA}")
    return WSOL_METADATA
