"""``fastwsol check-gpu --dry-run``: the GPU check's code at tiny shapes on the CPU through
Triton's interpreter (every line that does not need CUDA), its report, and that a check can fail."""

from __future__ import annotations

import json

import pytest
import torch

from fastwsol import check_gpu, kernel_cases
from fastwsol.cli import main as cli_main
from fastwsol.kernel_shapes import DRY_RUN_SHAPES, REAL_SHAPES


def test_dry_run_writes_a_passing_report(tmp_path, capsys):
    assert cli_main(["check-gpu", "--dry-run", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["ok"] and report["environment"]["dry_run"]
    checked = {(r["op"], r.get("shape"), r["dtype"], r.get("layout")) for r in report["correctness"]}
    for op in ("alignment_loss", "attentive_dropout", "consistency_loss"):
        for shape in DRY_RUN_SHAPES:
            for dtype in ("fp32", "bf16"):
                for layout in ("nchw", "channels_last"):
                    assert (op, shape, dtype, layout) in checked
    assert {r["dtype"] for r in report["correctness"] if r["op"] == "nan"} == {"fp32", "bf16"}
    assert all(r["sim_mask_flips"] == 0 for r in report["correctness"] if r["op"] == "alignment_loss")
    timed = {(r["op"], r["backend"]) for r in report["timings"] if "forward_ms" in r}
    assert timed == {(op, b) for op in ("alignment_loss", "attentive_dropout", "consistency_loss") for b in ("triton", "reference")}
    assert all(r["bytes_moved"] >= r["bytes_minimum"] > 0 for r in report["timings"] if r["backend"] == "triton")
    assert {r["backend"] for r in report["train_step"]} == {"eager", "triton"}
    assert all(r["images_per_s"] > 0 for r in report["train_step"])
    assert report["dali"]["status"].startswith("skipped")
    markdown = (tmp_path / "report.md").read_text()
    assert markdown.startswith("# fastwsol check-gpu: PASS") and "## Training step" in markdown

    # an existing report is never overwritten without --force
    assert cli_main(["check-gpu", "--dry-run", "--out", str(tmp_path)]) == 2
    assert "--force" in capsys.readouterr().err


def test_a_wrong_result_fails_the_check(monkeypatch):
    settings = check_gpu.Settings("cpu", True, False, 60, DRY_RUN_SHAPES)
    shapes = DRY_RUN_SHAPES["tiny-target"]
    assert check_gpu.check_alignment(settings, "tiny-target", shapes, "fp32", "nchw")["ok"]
    monkeypatch.setitem(kernel_cases.ALIGNMENT_TOLERANCES, "fp32", {"loss": 0.0, "grad": 0.0})
    assert not check_gpu.check_alignment(settings, "tiny-target", shapes, "fp32", "nchw")["ok"]


def test_real_shapes_are_the_papers():
    assert REAL_SHAPES["vgg16-cub"].feature == (32, 1024, 14, 14) and REAL_SHAPES["vgg16-cub"].classes == 200
    assert REAL_SHAPES["resnet50-cub"].feature == (32, 2048, 28, 28) and REAL_SHAPES["resnet50-cub"].fine_grained
    assert REAL_SHAPES["vgg16-imagenet"].feature == (256, 1024, 14, 14) and not REAL_SHAPES["vgg16-imagenet"].fine_grained


def test_without_a_gpu_it_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="--dry-run"):
        check_gpu.main(str(tmp_path))
