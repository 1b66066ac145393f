"""``fastwsol check-gpu``: prove the Triton kernels and the training step on this machine's GPU,
and measure them, in one command that always comes back with a report (docs/check_gpu.md).

Rows, in order (``plan``): correctness of every op against float64 (fp32, bf16, fp16, NCHW and
channels_last, the training path's bf16-read-as-fp32, the Philox dropout, NaN); the training
step of VGG16 and ResNet50 at their CUB settings, the authors' eager fp32 way against ours
(compiled, bf16, channels_last, the kernels), with gradients compared; the loss + dropout block
against the paper's formulation; each op's forward and backward from a CUDA graph against its
floor and the roofline model; the evaluator on GPU-made maps; DALI's decoding when installed.

The plan is printed first, with each row's estimated seconds; ``report.json`` and ``report.md``
are rewritten (atomically) after every row; a row that raises becomes an ERROR row and the run
goes on; the wall-clock budget (``--budget-s``) holds inside rows too (``runner``).
``--dry-run`` runs the same rows on the CPU at tiny shapes through Triton's interpreter: a
rehearsal of the code (the times mean nothing; the test suite runs it).
"""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path

import torch

from fastwsol.check_gpu.runner import Row, Settings, run_rows
from fastwsol.io import check_writable_folder
from fastwsol.kernel_shapes import DRY_RUN_SHAPES, REAL_SHAPES

FAIL_ROW_ENV = "FASTWSOL_CHECK_GPU_FAIL"  # rehearsal: the row of this name raises (docs/check_gpu.md)
REPORT_FILES = ("report.json", "report.md")

__all__ = ["Row", "Settings", "main", "run_checks"]


def environment(settings: Settings) -> dict:
    import triton

    from fastwsol import __version__

    env = {"fastwsol": __version__, "torch": torch.__version__, "triton": triton.__version__,
           "python": platform.python_version(), "device": settings.device, "dry_run": settings.dry_run,
           "quick": settings.quick, "budget_s": settings.budget_s}
    if settings.on_gpu:
        env.update(gpu=torch.cuda.get_device_name(), capability=".".join(map(str, torch.cuda.get_device_capability())),
                   cuda=torch.version.cuda)
    return env


def run_checks(settings: Settings, write=lambda report: None, log=print, rows: list[Row] | None = None) -> dict:
    """Run ``rows`` (default: the plan for ``settings``), calling ``write(report)`` after each."""
    from fastwsol.check_gpu.plan import build_rows

    rows = build_rows(settings) if rows is None else rows
    return run_rows(settings, rows, {"environment": environment(settings)}, write, log)


def _prepare_dry_run() -> None:
    """The interpreter must be on before the kernels are defined (Triton decides at import)."""
    if "fastwsol.kernels.alignment_loss" not in sys.modules:
        os.environ["TRITON_INTERPRET"] = "1"
        return
    from fastwsol.kernels import runtime

    if not runtime.interpreter_enabled():
        raise ValueError("--dry-run needs TRITON_INTERPRET=1 before fastwsol's kernels are imported")


def prepare_output(out: str, force: bool) -> tuple[Path, Path]:
    """The report paths in ``out``, after checking that the folder can be written and holds no
    report (unless ``force``): found now, not after minutes of checks."""
    out_dir = Path(out)
    targets = tuple(out_dir / name for name in REPORT_FILES)
    existing = [str(p) for p in targets if p.exists()]
    if existing and not force:
        raise ValueError(f"{', '.join(existing)} already exist; pass --force to overwrite or choose another --out")
    try:
        check_writable_folder(out_dir, "--out")
    except OSError as exc:
        reason = exc.__cause__ or exc  # the operating system's own error, where the check wraps one
        detail = getattr(reason, "strerror", None) or reason
        raise ValueError(f"--out {out}: cannot write the report there ({detail})") from exc
    return targets


def main(out: str, *, budget_s: float, quick: bool = False, dry_run: bool = False, force: bool = False,
         only: tuple[str, ...] = (), fail_row: str | None = None) -> int:
    """Run the checks, rewriting ``out/report.json`` and ``out/report.md`` after every row; 0
    when every row passed, 1 when one failed, raised or was not reached in time."""
    from fastwsol.check_gpu.report import format_markdown
    from fastwsol.io import write_text_atomic

    json_path, markdown_path = prepare_output(out, force)
    fail_row = fail_row or os.environ.get(FAIL_ROW_ENV) or None
    if dry_run:
        _prepare_dry_run()
        settings = Settings("cpu", True, quick, budget_s, DRY_RUN_SHAPES, only=only, fail_row=fail_row)
    else:
        if not torch.cuda.is_available():
            raise ValueError("check-gpu needs a CUDA GPU (torch.cuda.is_available() is False); "
                             "--dry-run runs the same checks on the CPU through Triton's interpreter")
        settings = Settings("cuda", False, quick, budget_s, REAL_SHAPES, only=only, fail_row=fail_row)

    def write(report: dict) -> None:
        write_text_atomic(json_path, json.dumps(report, indent=1, default=str))
        write_text_atomic(markdown_path, format_markdown(report))

    report = run_checks(settings, write)
    counts = ", ".join(f"{n} {s}" for s, n in report["counts"].items() if n)
    print(f"{report['verdict']} ({counts}): wrote {json_path} and {markdown_path} ({report['elapsed_s']:.0f} s)")
    return 0 if report["verdict"] == "PASS" else 1
