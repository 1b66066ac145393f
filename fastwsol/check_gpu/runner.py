"""Running check-gpu's rows: each isolated (an exception becomes an ERROR row with the end of its
traceback), each within the wall-clock budget (a row whose estimate exceeds the time left is
skipped; a row that runs out of time is stopped, by its own checks in loops and, on the real
clock, by an alarm), each with the warnings, log warnings and ``torch.compile`` graphs it caused,
and the report handed to ``write`` after every row."""

from __future__ import annotations

import contextlib
import logging
import math
import re
import signal
import threading
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

from fastwsol.kernel_shapes import OpShapes
from fastwsol.progress import LOG_INTERVAL_S

STATUSES = ("PASS", "FAIL", "ERROR", "SKIPPED")
NOT_RUN = "NOT RUN"  # a row the run has not reached yet (in the reports written while it runs)
TRACEBACK_LINES = 12
# Warnings known to be harmless, with why: (category name, message pattern, note). Anything else
# caught in a row is reported as it is.
KNOWN_WARNINGS = (
    ("RuntimeWarning", r"invalid value encountered",
     "expected where a check makes NaN on purpose (inf − inf); numpy says so under Triton's interpreter"),
)
# A row runs at most this many times its estimate (and at least ROW_LIMIT_MIN_S): an estimate that
# proves wrong on a new machine (a slow compile) costs that row, not every row after it.
ROW_LIMIT_FACTOR, ROW_LIMIT_MIN_S = 3.0, 30.0
# What Dynamo logs when a function reached its recompile limit and runs eagerly from then on.
RECOMPILE_LIMIT_LOG = re.compile(r"hit config\.\w*(recompile|cache_size)_limit")


class BudgetExceeded(BaseException):
    """The wall-clock budget ran out inside a row. A BaseException, like KeyboardInterrupt, so
    that no ``except Exception`` of a library the row calls swallows it."""


class RowSkipped(Exception):
    """A row that does not apply here (e.g. DALI not installed): SKIPPED with this reason."""


@dataclass
class Settings:
    device: str
    dry_run: bool
    quick: bool
    budget_s: float
    shapes: dict[str, OpShapes]
    only: tuple[str, ...] = ()  # run only the rows whose name contains one of these
    fail_row: str | None = None  # rehearsal of a failure: this row raises before it runs
    clock: Callable[[], float] = time.monotonic
    started: float = field(init=False)
    spent: bool = field(init=False, default=False)  # the budget ran out: every further row is skipped
    row_deadline: float = field(init=False, default=math.inf)  # on ``clock``: when the running row must stop

    def __post_init__(self):
        self.started = self.clock()

    def elapsed(self) -> float:
        return self.clock() - self.started

    def left(self) -> float:
        return self.budget_s - self.elapsed()

    def check_time(self, where: str) -> None:
        """Raise :class:`BudgetExceeded` when the budget or the running row's limit is spent
        (called inside loops)."""
        if self.left() <= 0:
            raise BudgetExceeded(f"the {self.budget_s:g} s budget ran out {where}")
        if self.clock() >= self.row_deadline:
            raise BudgetExceeded(f"the row's time limit ran out {where}")

    @property
    def on_gpu(self) -> bool:
        return self.device == "cuda"


@dataclass(frozen=True)
class Row:
    """One line of the report. ``run(settings, shared)`` returns the row's details with ``"ok"``
    (True: PASS, False: FAIL, None: SKIPPED) and optionally ``"reason"``; ``shared`` carries
    results between rows (the copy bandwidth, the reference training step's gradients)."""

    name: str
    section: str
    estimate_s: float
    run: Callable[[Settings, dict], dict]


@contextlib.contextmanager
def _alarm(settings: Settings, seconds: float):
    """On the real clock in the main thread, a SIGALRM when the budget or the row's limit runs
    out: it stops a row wherever it is (a compile, a loop without checks)."""
    usable = (settings.clock is time.monotonic and hasattr(signal, "setitimer")
              and threading.current_thread() is threading.main_thread())
    if not usable:
        yield
        return

    def stop(signum, frame):
        spent = settings.left() <= 0
        raise BudgetExceeded(f"the {settings.budget_s:g} s budget ran out (alarm)" if spent
                             else "the row's time limit ran out (alarm)")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 1e-3))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class _LogRecords(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def _compile_counters() -> dict[str, int]:
    """Dynamo's running totals: graphs compiled, graph breaks."""
    import sys

    if "torch._dynamo" not in sys.modules:  # nothing compiled yet; do not import it for nothing
        return {"graphs": 0, "graph_breaks": 0}
    from torch._dynamo.utils import counters

    return {"graphs": int(counters["stats"]["unique_graphs"]),
            "graph_breaks": int(sum(counters["graph_break"].values()))}


@contextlib.contextmanager
def _captured():
    """The warnings (not printed), the WARNING log records of torch's compiler, and the
    ``torch.compile`` graphs made while the block runs."""
    found = {"warnings": [], "logs": [], "compiles": {}}
    handler = _LogRecords()
    loggers = [logging.getLogger(name) for name in ("torch._dynamo", "torch._inductor")]
    for logger in loggers:
        logger.addHandler(handler)
    before = _compile_counters()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield found
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
        after = _compile_counters()
        # a row may clear Dynamo's state; its totals then restart from zero
        found["compiles"] = {k: after[k] - before[k] if after[k] >= before[k] else after[k] for k in after}
        found["compiles"]["recompile_limit_hits"] = sum(bool(RECOMPILE_LIMIT_LOG.search(m)) for m in handler.messages)
        found["logs"] = handler.messages
        found["warnings"] = _describe_warnings(caught)


def _describe_warnings(caught) -> list[dict]:
    """Each distinct warning once: category, message (first line), where, and the note of a known one."""
    seen, described = set(), []
    for item in caught:
        category = item.category.__name__
        message = str(item.message).splitlines()[0] if str(item.message) else ""
        if (category, message) in seen:
            continue
        seen.add((category, message))
        note = next((n for c, pattern, n in KNOWN_WARNINGS if c == category and re.search(pattern, message)), None)
        described.append({"category": category, "message": message, "where": f"{item.filename}:{item.lineno}",
                          "known": note})
    return described


def _traceback_tail(exc: BaseException) -> list[str]:
    lines = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip().splitlines()
    return lines[-TRACEBACK_LINES:]


def row_limit_s(row: Row) -> float:
    return max(ROW_LIMIT_FACTOR * row.estimate_s, ROW_LIMIT_MIN_S)


def run_row(settings: Settings, row: Row, shared: dict) -> dict:
    """The row's result: name, section, status, reason, estimate_s, seconds, details, warnings,
    logs, compiles (and traceback for an ERROR). The row runs until the budget or its own limit
    (``row_limit_s``) runs out, whichever comes first."""
    result = {"name": row.name, "section": row.section, "status": "SKIPPED", "reason": "", "estimate_s": row.estimate_s,
              "seconds": 0.0, "details": {}, "warnings": [], "logs": [], "compiles": {}}
    if settings.spent:
        result["reason"] = "budget spent before this row"
        result["budget_skip"] = True
        return result
    left = settings.left()
    if row.estimate_s > left:
        result["reason"] = f"estimated {row.estimate_s:.0f} s, {max(left, 0):.0f} s of the budget left"
        result["budget_skip"] = True
        return result
    started = settings.clock()
    limit = min(left, row_limit_s(row))
    settings.row_deadline = started + limit
    with _captured() as found:
        try:
            with _alarm(settings, limit):
                if row.name == settings.fail_row:
                    raise RuntimeError(f"rehearsal: row {row.name!r} forced to fail (fail_row)")
                details = row.run(settings, shared)
            ok = details.pop("ok")
            result["status"] = {True: "PASS", False: "FAIL", None: "SKIPPED"}[ok]
            result["reason"] = details.pop("reason", "")
            result["details"] = details
        except BudgetExceeded as exc:
            settings.spent = settings.left() <= 0
            ran = settings.clock() - started
            result["reason"] = f"stopped after {ran:.0f} s (estimated {row.estimate_s:g} s): {exc}"
            result["budget_skip"] = True
        except RowSkipped as exc:
            result["reason"] = str(exc)
        except Exception as exc:
            result["status"] = "ERROR"
            result["reason"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            result["traceback"] = _traceback_tail(exc)
    settings.row_deadline = math.inf
    result["seconds"] = settings.clock() - started
    result.update(warnings=found["warnings"], logs=found["logs"], compiles=found["compiles"])
    if found["compiles"]["recompile_limit_hits"] and result["status"] == "PASS":
        result["status"] = "FAIL"
        result["reason"] = ("Dynamo hit its recompile limit: part of this row ran eagerly, not compiled "
                            "(see logs)")
    return result


def verdict(results: list[dict]) -> str:
    """FAIL (a row failed or raised), INCOMPLETE (a row was skipped for time or not reached), PASS."""
    statuses = [r["status"] for r in results]
    if "FAIL" in statuses or "ERROR" in statuses:
        return "FAIL"
    if NOT_RUN in statuses or any(r.get("budget_skip") for r in results):
        return "INCOMPLETE"
    return "PASS"


def run_rows(settings: Settings, rows: list[Row], report: dict, write: Callable[[dict], None],
             log: Callable[[str], None] = print) -> dict:
    """Run ``rows`` in order into ``report["rows"]``, calling ``write(report)`` before the first
    and after every row; returns the report with its verdict and elapsed time."""
    report["plan"] = [{"name": r.name, "section": r.section, "estimate_s": r.estimate_s} for r in rows]
    report["rows"] = [{"name": r.name, "section": r.section, "status": NOT_RUN, "estimate_s": r.estimate_s}
                      for r in rows]
    log(plan_text(rows, settings.budget_s))
    _finish(settings, report)
    write(report)
    shared: dict = {}
    for number, row in enumerate(rows, 1):
        if row.estimate_s >= 10 and not settings.spent:
            log(f"[{number}/{len(rows)}] {row.name}: running (estimated {row.estimate_s:.0f} s)")
        with _heartbeat(settings, row.name, log):
            result = run_row(settings, row, shared)
        report["rows"][number - 1] = result
        line = f"[{number}/{len(rows)}] {result['status']:<7} {row.name} ({result['seconds']:.1f} s)"
        log(line + (f": {result['reason']}" if result["reason"] else ""))
        _finish(settings, report)
        write(report)
    return report


@contextlib.contextmanager
def _heartbeat(settings: Settings, name: str, log: Callable[[str], None]):
    """A line at least every ``LOG_INTERVAL_S`` while a row runs (fastwsol.progress's rule; a
    compile is silent for minutes)."""
    if settings.clock is not time.monotonic:
        yield
        return
    done, started = threading.Event(), time.monotonic()

    def beat():
        while not done.wait(LOG_INTERVAL_S):
            left = max(settings.left(), 0)
            log(f"    ... {name}: {time.monotonic() - started:.0f} s, {left:.0f} s of the budget left")

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def _finish(settings: Settings, report: dict) -> None:
    report["elapsed_s"] = settings.elapsed()
    report["verdict"] = verdict(report["rows"])
    report["counts"] = {s: sum(r["status"] == s for r in report["rows"]) for s in (*STATUSES, NOT_RUN)}


def plan_text(rows: list[Row], budget_s: float) -> str:
    """The plan printed before the first row: every row with its estimated seconds (compiles included)."""
    total = sum(r.estimate_s for r in rows)
    lines = [f"check-gpu plan: {len(rows)} rows, estimated {total:.0f} s (compiles included) of a {budget_s:g} s budget"
             + (" — the last rows will be skipped" if total > budget_s else "")]
    width = max((len(r.name) for r in rows), default=0)
    lines += [f"  {r.name:<{width}}  {r.estimate_s:6.1f} s" for r in rows]
    return "\n".join(lines)
