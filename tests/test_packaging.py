"""A non-editable install works away from the source tree: the wheel carries the configs and the
wsolevaluation metadata as package data, and both are found through the installed package."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from a copy of the tracked files (the working tree stays clean)."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    if importlib.util.find_spec("setuptools") is None:
        pytest.skip("setuptools is needed to build the wheel")
    source, out = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("wheel")
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    for name in filter(None, tracked.decode().split("\0")):
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--wheel-dir", str(out), str(source)], check=True, capture_output=True)
    (built,) = out.glob("fastwsol-*.whl")
    return built


def test_wheel_carries_configs_and_metadata(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for config in (REPO / "configs").glob("*.yaml"):
        assert f"fastwsol/configs/{config.name}" in names
    for split in ("CUB/train", "CUB/val", "CUB/test", "ILSVRC/val", "ILSVRC/test",
                  "OpenImages/train", "OpenImages/val", "OpenImages/test"):
        for file in ("image_ids.txt", "class_labels.txt", "image_sizes.txt", "localization.txt"):
            assert f"fastwsol/metadata/{split}/{file}" in names
    assert {"fastwsol/metadata/NOTICE", "fastwsol/data/prepare.py", "fastwsol/kernels/alignment_loss.py"} <= names
    # every package of the source tree is in the wheel (pyproject lists them one by one)
    for init in [*(REPO / "fastwsol").rglob("__init__.py"), *(REPO / "kernels").rglob("__init__.py")]:
        relative = init.relative_to(REPO).as_posix()
        assert (f"fastwsol/{relative}" if relative.startswith("kernels/") else relative) in names, relative
    # the top-level kernels/ installs only as fastwsol.kernels: no top-level `kernels` package (a
    # PyPI package of that name exists)
    assert not any(name.startswith("kernels/") for name in names)


def test_installed_wheel_finds_configs_and_metadata(wheel, tmp_path):
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, capture_output=True)
    script = (
        "import fastwsol, pathlib\n"
        "from fastwsol.config import load_config, config_path\n"
        "from fastwsol.data import read_split_metadata\n"
        f"site = pathlib.Path({str(site)!r}).resolve()\n"
        "assert pathlib.Path(fastwsol.__file__).resolve().is_relative_to(site), fastwsol.__file__\n"
        "assert len(read_split_metadata('builtin', 'CUB', 'test')) == 5794\n"
        "assert len(read_split_metadata('builtin', 'OpenImages', 'test').masks) == 5000\n"
        "assert config_path('cub_vgg16').resolve().is_relative_to(site)\n"
        "assert load_config('configs/cub_vgg16.yaml').data.metadata_root == 'builtin'\n"
        "assert load_config('ilsvrc_resnet50').loss.lambda_sim == 8.0\n"
        "import fastwsol.kernels.alignment_loss as kernel\n"
        "assert pathlib.Path(kernel.__file__).resolve().is_relative_to(site / 'fastwsol' / 'kernels'), kernel.__file__\n"
        "assert callable(kernel.alignment_loss)\n"
        "print('ok')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_the_source_checkout_serves_the_top_level_kernels_as_fastwsol_kernels():
    """The editable install (the README's `pip install -e`) maps fastwsol.kernels to kernels/."""
    import fastwsol.kernels.alignment_loss as kernel

    assert Path(kernel.__file__).resolve().parent == REPO / "kernels"
    assert not (REPO / "fastwsol" / "kernels").exists()
