"""Progress of a long loop, by one rule for every command: a tqdm bar when stderr is a terminal;
otherwise (nohup, Slurm, CI logs) one plain line at least every ``interval`` seconds, with the
count, img/s and the time left, so a log shows a job is alive without a carriage-return frame per
step."""

from __future__ import annotations

import sys
import time

LOG_INTERVAL_S = 30.0


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class Progress:
    """``with Progress(total, "evaluate test") as bar: ... bar.update(steps, images=n)``.

    ``total``: steps (batches, files); ``images``, when given to ``update``, sets the rate's unit
    to img/s (else steps/s). ``enabled=False`` prints nothing (a DDP rank other than 0, a caller's
    ``--no-progress``); ``terminal`` overrides the stderr check (tests)."""

    def __init__(
        self,
        total: int,
        description: str,
        *,
        enabled: bool = True,
        terminal: bool | None = None,
        interval: float = LOG_INTERVAL_S,
        stream=None,
        clock=time.perf_counter,
    ):
        self.total, self.description, self.interval = total, description, interval
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.clock = clock
        self.done = self.images = 0
        self.started = self.last_line = clock()
        terminal = self.stream.isatty() if terminal is None else terminal
        self._bar = None
        if enabled and terminal:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=description, dynamic_ncols=True, leave=False, file=self.stream)

    def update(self, steps: int = 1, *, images: int = 0, postfix: str = "") -> None:
        self.done += steps
        self.images += images
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(steps)
            if postfix:
                self._bar.set_postfix_str(postfix, refresh=False)
            return
        now = self.clock()
        if now - self.last_line >= self.interval and self.done < self.total:
            self.last_line = now
            print(self.line(now, postfix), file=self.stream, flush=True)

    def line(self, now: float | None = None, postfix: str = "") -> str:
        """``evaluate test: 120/500 (24 %), 35.1 img/s, 1 min 48 s left``."""
        now = self.clock() if now is None else now
        elapsed = max(now - self.started, 1e-9)
        count, unit = (self.images, "img/s") if self.images else (self.done, "steps/s")
        rate = count / elapsed
        left = (self.total - self.done) * elapsed / self.done if self.done else float("nan")
        percent = f" ({100 * self.done / self.total:.0f} %)" if self.total else ""
        eta = f", {_duration(left)} left" if self.done else ""
        extra = f", {postfix}" if postfix else ""
        return f"{self.description}: {self.done}/{self.total}{percent}, {rate:.1f} {unit}{eta}{extra}"

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
