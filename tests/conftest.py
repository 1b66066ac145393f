"""Test-run settings. Triton picks interpreter-or-compiler when a @triton.jit function is
defined, so TRITON_INTERPRET must be set before any kernel module is imported; this is the
test run's choice (set TRITON_INTERPRET=0 to test the compiled kernels on a GPU)."""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import hashlib  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402


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
