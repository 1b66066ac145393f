"""``fastwsol check-gpu``: prove the Triton kernels on this GPU (fastwsol.check_gpu)."""

from __future__ import annotations

import argparse

from fastwsol.cli.common import count


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "check-gpu",
        help="prove the Triton kernels on this GPU against the float64 reference at the "
        "real shapes, time them, the training step and DALI; report.json + report.md",
    )
    parser.add_argument("--out", default="check-gpu", metavar="DIR", help="where report.json and report.md go")
    parser.add_argument("--quick", action="store_true", help="time one shape, bf16, channels_last, VGG16 only")
    parser.add_argument(
        "--dry-run", action="store_true", help="the same checks on the CPU at tiny shapes (Triton's interpreter)"
    )
    parser.add_argument("--force", action="store_true", help="overwrite an existing report in --out")
    parser.add_argument("--budget-s", type=count, default=480, help="seconds after which no further timed row starts")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fastwsol.check_gpu import main as check_gpu

    return check_gpu(args.out, quick=args.quick, dry_run=args.dry_run, force=args.force, budget_s=args.budget_s)
