"""``bench/run_check_gpu.sh``, the one command a lent GPU machine runs, rehearsed on the CPU with
``--dry-run``: everything it must bring back lands in $OUT (the machine's record, the install's
log, check-gpu's log and report), also when a row fails, and its exit status is check-gpu's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "bench" / "run_check_gpu.sh"
ROWS = "copy bandwidth,nan fp32"
ROW_NAMES = ["copy bandwidth", "correctness nan fp32"]


def _installed_from_this_checkout() -> bool:
    import fastwsol
    import fastwsol.kernels

    return all(REPO in Path(m.__file__).resolve().parents for m in (fastwsol, fastwsol.kernels))


pytestmark = pytest.mark.skipif(
    not _installed_from_this_checkout(),
    reason="fastwsol is imported from another checkout: the script would pip-install this one into the test's Python")


def run_script(out: Path | None, *options: str, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHON": sys.executable, "BUDGET_S": "60", **env}
    environment.pop("OUT", None)
    if out is not None:
        environment["OUT"] = str(out)
    return subprocess.run(["bash", str(SCRIPT), *options], env=environment, capture_output=True, text=True,
                          timeout=300)


def test_dry_run_brings_back_the_record_logs_and_report(tmp_path):
    done = run_script(tmp_path / "out", "--dry-run", "--only", ROWS, COMMIT="abc1234")

    assert done.returncode == 0, done.stdout + done.stderr
    out = tmp_path / "out"
    found = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert found == ["check-gpu.log", "check-gpu/report.json", "check-gpu/report.md", "environment.txt", "install.log"]
    environment = (out / "environment.txt").read_text()
    import torch
    import triton

    assert f"torch {torch.__version__}" in environment and f"triton {triton.__version__}" in environment
    assert "commit: abc1234" in environment  # the device's copy has no .git: the command names it
    assert "available: False" in environment  # what the machine had is recorded, the run went on
    assert "already installed" in (out / "install.log").read_text()
    report = json.loads((out / "check-gpu" / "report.json").read_text())
    assert report["verdict"] == "PASS" and [r["name"] for r in report["rows"]] == ROW_NAMES
    assert report["environment"]["budget_s"] == 60
    assert (out / "check-gpu.log").read_text().rstrip().endswith("check-gpu exit status 0 (0 = PASS, 1 = FAIL or INCOMPLETE, 2 = refused its options or --out, 124 or 137 = killed by the timeout)")


def test_a_failing_row_still_brings_back_the_report_and_exit_status_1(tmp_path):
    done = run_script(tmp_path / "out", "--dry-run", "--only", ROWS, FASTWSOL_CHECK_GPU_FAIL="copy bandwidth")

    assert done.returncode == 1, done.stdout + done.stderr
    report = json.loads((tmp_path / "out" / "check-gpu" / "report.json").read_text())
    assert [(r["name"], r["status"]) for r in report["rows"]] == list(zip(ROW_NAMES, ("ERROR", "PASS")))
    assert "check-gpu exit status 1" in (tmp_path / "out" / "check-gpu.log").read_text()


def test_without_out_it_refuses_before_running_anything(tmp_path):
    done = run_script(None, "--dry-run")

    assert done.returncode != 0 and "set OUT" in done.stderr
    assert list(tmp_path.iterdir()) == []
