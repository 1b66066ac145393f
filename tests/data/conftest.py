"""A small synthetic dataset shared by the data tests (built once per session)."""

from pathlib import Path

import pytest

from fastwsol.data import make_synthetic_dataset


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory):
    """3 classes × 7 train / 5 val / 5 test images; eval splits of 15 (not divisible by 4)."""
    return make_synthetic_dataset(tmp_path_factory.mktemp("synthetic"), classes=3, train_per_class=7,
                                  test_per_class=5, seed=3)


@pytest.fixture(scope="session")
def synthetic_large_images(tmp_path_factory):
    """Images larger than 256 px, so the resize downsamples (antialiasing matters)."""
    return make_synthetic_dataset(tmp_path_factory.mktemp("synthetic_large"), classes=2, train_per_class=4,
                                  test_per_class=4, seed=5, min_size=380, max_size=500)


@pytest.fixture
def copy_split():
    """``copy_split(paths, split, dest)``: see :func:`_copy_split` (a fixture, since test files
    cannot import a module named ``conftest`` unambiguously)."""
    return _copy_split


def _copy_split(paths, split: str, dest: Path) -> tuple[Path, Path]:
    """Copy one split (images + metadata) so a test can damage it; returns (data_root, metadata_root)."""
    import shutil

    data_root, metadata_root = dest / "data", dest / "metadata"
    shutil.copytree(paths.metadata_root / paths.dataset / split, metadata_root / paths.dataset / split)
    for line in (metadata_root / paths.dataset / split / "image_ids.txt").read_text().splitlines():
        target = data_root / paths.dataset / line
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(paths.data_root / paths.dataset / line, target)
    return data_root, metadata_root
