"""``fastwsol check-gpu``: prove the Triton kernels and the training step on this GPU, and
measure them (fastwsol.check_gpu, docs/check_gpu.md)."""

from __future__ import annotations

import argparse

from fastwsol.cli.common import count

DEFAULT_BUDGET_S = 420  # with the start of Python and torch, under 8 minutes: room for a rerun in 15


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "check-gpu",
        help="prove the Triton kernels and the training step on this GPU against float64 and the authors' "
        "eager fp32 step, and time them; report.json + report.md, rewritten after every row",
    )
    parser.add_argument("--out", default="check-gpu", metavar="DIR", help="where report.json and report.md go")
    parser.add_argument("--quick", action="store_true",
                        help="one shape (vgg16-cub) and VGG16 only: about 3 minutes on an H100")
    parser.add_argument(
        "--dry-run", action="store_true", help="the same rows on the CPU at tiny shapes (Triton's interpreter)"
    )
    parser.add_argument("--force", action="store_true", help="overwrite an existing report in --out")
    parser.add_argument("--budget-s", type=count, default=DEFAULT_BUDGET_S, metavar="SECONDS",
                        help=f"wall-clock budget of the rows (default {DEFAULT_BUDGET_S}): a row that would overrun it "
                        "is skipped, one that runs out of time is stopped, and the report says which")
    parser.add_argument("--only", default="", metavar="TEXT[,TEXT]",
                        help="run only the rows whose name contains one of these (e.g. 'train,timing'); "
                        "the plan printed at the start names every row")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fastwsol.check_gpu import main as check_gpu

    only = tuple(part.strip() for part in args.only.split(",") if part.strip())
    return check_gpu(args.out, quick=args.quick, dry_run=args.dry_run, force=args.force, budget_s=args.budget_s,
                     only=only)
