"""What the benchmark scripts share: where results go and which run each came from, a plain-text
table for the console, and the results writer (``<name>.json`` with everything, ``<name>.csv``
with the rows, by ``fastwsol.tables.csv_text``). The scripts are modules of the ``bench``
package, run from the repository root as ``python -m bench.<script>``.

A *full* run is a script run with its default arguments and without ``run_all.py --quick``: its
results go to ``bench/results/`` (committed; the README quotes them). Any other run (``--quick``,
fewer images, other shapes) goes to ``bench/results/quick/`` (git-ignored), so a quick look never
replaces a committed measurement. Every results file records its run: full or quick, date,
commit, arguments.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from fastwsol.io import write_text_atomic
from fastwsol.tables import csv_text

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent  # the repository root, where ``python -m bench.<script>`` runs
RESULTS = BENCH / "results"
QUICK_RESULTS = RESULTS / "quick"
QUICK_ENV = "FASTWSOL_BENCH_QUICK"  # set by run_all.py --quick for every script it runs
_NUMBER = re.compile(r"^[-+]?\d[\d,.]*\s?(×|x|%|ms|s)?$")


def format_table(header: Sequence[str], rows: Sequence[Sequence], indent: str = "") -> str:
    """Aligned columns under a ruled header: a column of numbers (also formatted ones, e.g.
    ``"3.30×"``) right-aligned, any other left-aligned. Cells are printed with ``str``."""
    cells = [[str(c) for c in row] for row in rows]
    columns = list(zip(*cells)) if cells else [() for _ in header]
    widths = [max(len(str(h)), *(len(c) for c in column)) for h, column in zip(header, columns)]
    right = [any(column) and all(_NUMBER.match(c) for c in column if c) for column in columns]

    def line(values):
        return indent + "  ".join(f"{v:>{w}}" if r else f"{v:<{w}}" for v, w, r in zip(values, widths, right)).rstrip()

    head = line([str(h) for h in header])
    return "\n".join([head, indent + "-" * (len(head) - len(indent)), *map(line, cells)])


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=BENCH, capture_output=True, text=True, timeout=30,
                              check=False).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def is_full_run(parser, args, ignore=()) -> bool:
    """The script ran with its default arguments (those in ``ignore`` do not change the figures)
    and not under ``run_all.py --quick``."""
    defaults, given = vars(parser.parse_args([])), vars(args)
    return not os.environ.get(QUICK_ENV) and all(given[k] == defaults[k] for k in given if k not in ignore)


def run_record(full: bool) -> dict:
    commit = _git("rev-parse", "--short", "HEAD")
    if commit and _git("status", "--porcelain", "--untracked-files=no"):
        commit += "+changes"
    return {"kind": "full" if full else "quick", "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "commit": commit or "unknown", "argv": sys.argv[1:]}


def save_results(name: str, payload: dict, rows: list[dict], fields=None, *, parser, args, ignore=()) -> Path:
    """``<name>.json`` (``payload`` + its run record) and ``<name>.csv`` (``rows``) in the folder
    of this kind of run; returns the JSON's path."""
    full = is_full_run(parser, args, ignore)
    folder = RESULTS if full else QUICK_RESULTS
    path = folder / f"{name}.json"
    write_text_atomic(path, json.dumps({**payload, "run": run_record(full)}, indent=2) + "\n")
    write_text_atomic(folder / f"{name}.csv", csv_text(rows, fields))
    kind = "a full run" if full else "not the full run, kept apart from the committed results"
    print(f"wrote {path} and .csv ({kind})")
    return path


def describe_run(path: Path, payload: dict) -> str:
    """'full 2026-12-01 abc1234' for a results file: its run record, or for an older committed
    file without one, the commit that last changed it."""
    run = payload.get("run")
    if isinstance(run, dict):
        return f"{run['kind']} {run['date'][:10]} {run['commit']}"
    logged = _git("log", "-1", "--format=%cs %h", "--", str(path))
    return f"full {logged} (committed)" if logged else "unrecorded run"
