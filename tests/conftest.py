"""Test-run settings. Triton picks interpreter-or-compiler when a @triton.jit function is
defined, so TRITON_INTERPRET must be set before any kernel module is imported; this is the
test run's choice (set TRITON_INTERPRET=0 to test the compiled kernels on a GPU)."""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import hashlib  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402


def pytest_collection_modifyitems(config, items):
    """Tests marked ``requires_dali`` are skipped where DALI is not installed (aarch64 Linux and
    macOS have no DALI wheels); .ci/run fails when DALI does not import, so CI never skips them."""
    marked = [item for item in items if item.get_closest_marker("requires_dali")]
    if not marked:
        return
    from fastwsol.data.dali_loader import dali_available

    if dali_available():
        return
    skip = pytest.mark.skip(reason="requires_dali: NVIDIA DALI is not installed (nvidia.dali cannot be imported)")
    for item in marked:
        item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def session_working_directory(tmp_path_factory) -> Path:
    """Session fixtures (a tiny run, a tiny set) are made in an empty folder of their own, not in
    the folder pytest was started from."""
    folder = tmp_path_factory.mktemp("session_cwd")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        yield folder


@pytest.fixture(autouse=True)
def _test_working_directory(tmp_path, monkeypatch):
    """Every test runs in its own empty working directory, so what the user's folder holds (a
    finished `fastwsol reproduce`, a runs/ or data/ folder) cannot change its outcome; tests find
    the repository's files from their own ``__file__``."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="session")
def wsol_metadata_root() -> Path:
    """The real wsolevaluation metadata shipped in the package (``metadata_root: builtin``)."""
    from fastwsol.data import BUILTIN_METADATA_ROOT

    return BUILTIN_METADATA_ROOT


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """A few synthetic images in the wsolevaluation layout (3 classes × 6 train / 2 val / 2 test)."""
    from fastwsol.data import make_synthetic_dataset

    root = tmp_path_factory.mktemp("synthetic")
    return make_synthetic_dataset(root, classes=3, train_per_class=6, test_per_class=2, seed=0, min_size=64, max_size=96)


@pytest.fixture(scope="session")
def tiny_run_overrides(tiny_dataset):
    """``--set`` values for a tiny eager run (vgg_small, 64² crops, 2 epochs, batch 4) into ``out_dir``."""

    def overrides(out_dir, *extra: str) -> list[str]:
        return [
            f"data.data_root={tiny_dataset.data_root}",
            f"data.metadata_root={tiny_dataset.metadata_root}",
            f"data.dataset={tiny_dataset.dataset}",
            "data.image_size=64",
            "data.resize_size=72",
            "data.loader=torch",
            "data.num_threads=0",
            "model.name=vgg_small",
            "optim.epochs=2",
            "optim.warm_epochs=1",
            "optim.lr_decay_epochs=[]",
            "optim.batch_size=4",
            "optim.warm_batch_size=4",
            "optim.lr=0.01",
            "train.compile=false",
            "train.backend=reference",
            "train.progress=false",
            "train.eval_interval=1",
            "eval.batch_size=4",
            f"train.out_dir={out_dir}",
            *extra,
        ]

    return overrides


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_run_overrides) -> Path:
    """The best checkpoint of one tiny training run (shared by the CLI tests)."""
    from fastwsol.config import load_config
    from fastwsol.train import Trainer

    out_dir = tmp_path_factory.mktemp("tiny_run")
    Trainer(load_config(None, tiny_run_overrides(out_dir))).fit()
    return out_dir / "best.pt"


def file_hashes(root: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under ``root`` (a file: itself)."""
    root = Path(root)
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root) if p != root else p.name): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.fixture
def hashes():
    """``hashes(folder)``: the "never lose a user's file" tests hash a folder before and after a
    refusal."""
    return file_hashes


def write_tiny_openimages(root: Path):
    """An OpenImages30k-like tree under ``root``: ``images/OpenImages/<split>/<class>/<id>.jpg``
    (2 classes, 4 train, 2 val and 3 test images of varied sizes) with wsolevaluation's GT mask
    PNGs beside the val/test images (``<id>_m<class>_<k>.png``, ``<id>_ignore.png``: one image of
    each split has two instances, some have an ignore mask, one has none) and ``metadata/OpenImages``
    with an empty ``image_sizes.txt`` and train's ``localization.txt`` empty, as in the release.
    Each image is noise with a bright square per instance, its mask that square."""
    import types

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    # per split: (class, (width, height), instance squares (x0, y0, side), ignore square or None)
    images = {
        "train": [(0, (80, 60), [(10, 10, 30)], None), (0, (64, 64), [(20, 5, 25)], None),
                  (1, (96, 72), [(40, 20, 30)], None), (1, (72, 90), [(5, 40, 35)], None)],
        "val": [(0, (80, 64), [(8, 8, 24), (48, 30, 20)], (0, 0, 70)), (1, (90, 70), [(30, 20, 30)], None)],
        "test": [(1, (88, 66), [(6, 6, 20), (50, 30, 24)], (0, 0, 80)), (0, (70, 84), [(20, 30, 30)], (10, 20, 50)),
                 (0, (96, 64), [(50, 10, 30)], None)],
    }
    data = root / "images" / "OpenImages"
    for split, entries in images.items():
        lines = {"image_ids": [], "class_labels": [], "localization": []}
        for n, (label, (width, height), squares, ignore) in enumerate(entries):
            image_id = f"{split}/c{label}/{split}{n}.jpg"
            pixels = rng.integers(0, 90, (height, width, 3), dtype=np.uint8)
            masks = []
            for x0, y0, side in squares:
                pixels[y0 : y0 + side, x0 : x0 + side] = (220, 200 - 150 * label, 60 + 150 * label)
                mask = np.zeros((height, width), np.uint8)
                mask[y0 : y0 + side, x0 : x0 + side] = 255
                masks.append(mask)
            (data / image_id).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(data / image_id, quality=95)
            lines["image_ids"].append(image_id)
            lines["class_labels"].append(f"{image_id},{label}")
            if split == "train":
                continue
            stem = image_id.removesuffix(".jpg")
            ignore_path = ""
            if ignore is not None:
                x0, y0, side = ignore
                region = np.zeros((height, width), np.uint8)
                region[y0 : y0 + side, x0 : x0 + side] = 255
                ignore_path = f"{stem}_ignore.png"
                Image.fromarray(region).save(data / ignore_path)
            for k, mask in enumerate(masks):
                mask_path = f"{stem}_mc{label}_{k}.png"
                Image.fromarray(mask).save(data / mask_path)
                lines["localization"].append(f"{image_id},{mask_path},{ignore_path if k == 0 else ''}")
        folder = root / "metadata" / "OpenImages" / split
        folder.mkdir(parents=True)
        for name, rows in (*lines.items(), ("image_sizes", [])):
            (folder / f"{name}.txt").write_text("".join(f"{row}\n" for row in rows))
    return types.SimpleNamespace(
        root=root, data_root=root / "images", metadata_root=root / "metadata", dataset="OpenImages"
    )


@pytest.fixture(scope="session")
def openimages_tree():
    """:func:`write_tiny_openimages`, for a test that changes its own copy."""
    return write_tiny_openimages


@pytest.fixture(scope="session")
def tiny_openimages(tmp_path_factory):
    """The OpenImages-like tree of :func:`write_tiny_openimages` (read only: tests that change
    it write their own)."""
    return write_tiny_openimages(tmp_path_factory.mktemp("openimages"))


@pytest.fixture(scope="session")
def tiny_openimages_overrides(tiny_run_overrides, tiny_openimages):
    """``tiny_run_overrides`` on the tiny OpenImages tree, checkpoints selected by PxAP."""

    def overrides(out_dir, *extra: str) -> list[str]:
        return [
            *tiny_run_overrides(out_dir),
            f"data.data_root={tiny_openimages.data_root}",
            f"data.metadata_root={tiny_openimages.metadata_root}",
            "data.dataset=OpenImages",
            "train.select_metric=pxap",
            *extra,
        ]

    return overrides


@pytest.fixture(scope="session")
def tiny_openimages_run(tmp_path_factory, tiny_openimages_overrides) -> Path:
    """The folder of one epoch of `fastwsol train` on the tiny OpenImages tree (best.pt, last.pt,
    test_metrics.json)."""
    from fastwsol.cli import main

    out_dir = tmp_path_factory.mktemp("tiny_openimages_run")
    defaults = out_dir.parent / "defaults.yaml"  # every key given below or fastwsol/config.py's default
    defaults.write_text("{}\n")
    overrides = tiny_openimages_overrides(out_dir, "optim.epochs=1", "optim.warm_epochs=0")
    assert main(["train", "--config", str(defaults), *(a for o in overrides for a in ("--set", o))]) == 0
    return out_dir
