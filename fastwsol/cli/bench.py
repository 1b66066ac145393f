"""``fastwsol bench``: run the benchmarks of a source checkout (``python -m bench.run_all``)."""

from __future__ import annotations

import argparse
import sys


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="run bench/ (kernels, evaluator, data, training step) and print one summary table, each figure with "
        "a target marked met or MISSED",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smaller sizes, fewer repeats: about 7 min on a 2-core CPU (a full run takes tens of minutes); "
        "results go to bench/results/quick/ (git-ignored), never over the committed full-run results",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="NAME",
        help="kernels_gpu_build alignment_loss dropout_consistency evaluator mask_evaluator data train_step",
    )
    parser.add_argument(
        "--summary-only",
        action="store_true",
        help="print the summary of the saved results (each row names its run) without running or writing anything",
    )
    parser.add_argument(
        "--write-summary", action="store_true", help="with --summary-only: rewrite summary.{json,csv} too"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]  # `python -m bench.<name>` runs from the repository root
    if not (root / "bench" / "run_all.py").is_file():
        raise FileNotFoundError(
            f"{root / 'bench' / 'run_all.py'} is missing: `fastwsol bench` runs the benchmarks of a source checkout"
        )
    if args.only:  # checked here, so the error is this command's, before anything runs
        listing = [sys.executable, "-c", "from bench.run_all import BENCHMARKS; print(*BENCHMARKS)"]
        names = subprocess.run(listing, cwd=root, stdout=subprocess.PIPE, text=True, check=True).stdout.split()
        unknown = [name for name in args.only if name not in names]
        if unknown:
            raise ValueError(f"--only: unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(names)}")
    flags = (
        ["--quick"] * args.quick
        + ["--summary-only"] * args.summary_only
        + ["--write-summary"] * args.write_summary
        + (["--only", *args.only] if args.only else [])
    )
    return subprocess.run([sys.executable, "-m", "bench.run_all", *flags], cwd=root).returncode
