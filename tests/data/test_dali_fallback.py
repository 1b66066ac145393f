"""When DALI cannot start (a build for another CUDA, a driver too old, not installed): `auto`
falls back to the torchvision loader with one line saying why; `dali` fails with that reason."""

from __future__ import annotations

import pytest
import torch

from fastwsol.data import dali_loader
from fastwsol.data import loader as loader_module
from fastwsol.data.loader import DaliUnavailableError, build_loader
from fastwsol.data.torch_loader import TorchSplitLoader

DRIVER_MISMATCH = "CUDA driver version is insufficient for CUDA runtime version\n(details on a second line)"


@pytest.fixture
def fresh_probe(monkeypatch):
    """Forget this process's probe results and printed reasons."""
    monkeypatch.setattr(dali_loader, "_start_failures", {})
    monkeypatch.setattr(loader_module, "_fallbacks_reported", set())


@pytest.fixture
def dali_cannot_start(monkeypatch, fresh_probe):
    """Installed (as far as the probe is told) but failing when its pipeline starts."""

    def fail(device):
        raise RuntimeError(DRIVER_MISMATCH)

    monkeypatch.setattr(dali_loader, "dali_available", lambda: True)
    monkeypatch.setattr(dali_loader, "_run_probe_pipeline", fail)


def _build(paths, kind):
    return build_loader(paths.data_root, paths.metadata_root, paths.dataset, "test", train=False, batch_size=4,
                        loader=kind, device="cpu", num_threads=0)


def test_auto_falls_back_with_one_line(synthetic, dali_cannot_start, capsys):
    assert isinstance(_build(synthetic, "auto"), TorchSplitLoader)
    assert isinstance(_build(synthetic, "auto"), TorchSplitLoader)
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["fastwsol: DALI cannot start on cpu: RuntimeError: CUDA driver version is insufficient for "
                     "CUDA runtime version; using the torchvision loader"]


def test_dali_requested_fails_with_the_reason(synthetic, dali_cannot_start):
    with pytest.raises(DaliUnavailableError, match=r"loader 'dali': DALI cannot start on cpu: RuntimeError: CUDA driver"):
        _build(synthetic, "dali")


def test_not_installed_is_named(synthetic, monkeypatch, fresh_probe, capsys):
    monkeypatch.setattr(dali_loader, "dali_available", lambda: False)
    assert isinstance(_build(synthetic, "auto"), TorchSplitLoader)
    assert "DALI is not installed (pip install nvidia-dali-cuda130" in capsys.readouterr().err
    with pytest.raises(DaliUnavailableError, match="not installed"):
        _build(synthetic, "dali")


@pytest.mark.requires_dali
def test_probe_passes_where_dali_runs(synthetic, fresh_probe, capsys):
    assert dali_loader.dali_start_failure(torch.device("cpu")) is None
    assert _build(synthetic, "auto").backend == "dali"
    assert capsys.readouterr().err == ""
