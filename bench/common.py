"""What the benchmarks share: where their results go, a plain-text table, and the writer of a
benchmark's results (``<name>.json`` with everything, ``<name>.csv`` with the rows).

The scripts run as ``python bench/<script>.py``, so this module is imported as ``common``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

from fastwsol.io import write_text_atomic

RESULTS = Path(__file__).resolve().parent / "results"
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


def csv_text(rows: list[dict], fields: Sequence[str] | None = None) -> str:
    """Rows of dicts as CSV; the header is ``fields`` or every key in first-seen order."""
    if fields is None:
        fields = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(fields))
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def write_results(name: str | os.PathLike, payload, rows: list[dict], fields: Sequence[str] | None = None,
                  *, indent: int = 2) -> Path:
    """``RESULTS/<name>.json`` (``payload``) and ``.csv`` (``rows``), atomically; ``name`` may
    also be a path (its suffix is replaced). Returns the JSON path."""
    base = RESULTS / name if isinstance(name, str) else Path(name)
    json_path = base.with_suffix(".json")
    write_text_atomic(json_path, json.dumps(payload, indent=indent) + "\n")
    write_text_atomic(base.with_suffix(".csv"), csv_text(rows, fields))
    print(f"wrote {json_path} and .csv")
    return json_path
