"""One progress rule: a bar on a terminal, a plain line at least every interval otherwise."""

import io

from fastwsol.progress import Progress


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_without_a_terminal_a_line_comes_every_interval_with_rate_and_time_left():
    stream, clock = io.StringIO(), Clock()
    with Progress(10, "evaluate test", terminal=False, interval=30, stream=stream, clock=clock) as progress:
        for _ in range(10):
            clock.now += 10
            progress.update(images=8)
    lines = stream.getvalue().splitlines()
    # 100 s for 10 steps: a line at 30, 60 and 90 s, none after the last step
    assert lines == [
        "evaluate test: 3/10 (30 %), 0.8 img/s, 1 min 10 s left",
        "evaluate test: 6/10 (60 %), 0.8 img/s, 40 s left",
        "evaluate test: 9/10 (90 %), 0.8 img/s, 10 s left",
    ]


def test_disabled_progress_prints_nothing_and_still_counts():
    stream, clock = io.StringIO(), Clock()
    progress = Progress(4, "x", enabled=False, terminal=False, interval=0, stream=stream, clock=clock)
    clock.now = 5
    progress.update(2)
    assert stream.getvalue() == "" and progress.done == 2


def test_steps_without_images_report_steps_per_second():
    clock = Clock()
    progress = Progress(4, "localize", terminal=False, stream=io.StringIO(), clock=clock)
    clock.now = 2
    progress.update(1)
    assert progress.line() == "localize: 1/4 (25 %), 0.5 steps/s, 6 s left"


def test_on_a_terminal_a_bar_is_drawn():
    stream = io.StringIO()
    with Progress(3, "train", terminal=True, stream=stream) as progress:
        assert "\rtrain:   0%" in stream.getvalue() and "0/3" in stream.getvalue()  # tqdm's frame, not a line
        progress.update(3)
    assert "\n" not in stream.getvalue()
