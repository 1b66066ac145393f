"""The titled grid of reproduce's figure: pictures placed as they are, titles that fit or an
error, F̂'s hat drawn, and a colour bar running from blue (0) to red (1)."""

import numpy as np
import pytest

from fastwsol.visualize import colour_bar, put_text, text_block, text_width, titled_grid


def test_the_hat_of_f_hat_is_drawn_above_its_letter():
    plain, hatted = (np.zeros((60, 80, 3), np.uint8) for _ in range(2))
    put_text(plain, "F", (10, 45), 0.8)
    put_text(hatted, "F\u0302", (10, 45), 0.8)
    rows = np.nonzero(plain.any(axis=(1, 2)))[0]
    extra = np.nonzero((hatted != plain).any(axis=2))
    assert len(extra[0]) and extra[0].max() < rows.min()  # only above the letter's top
    columns = np.nonzero(plain.any(axis=(0, 2)))[0]
    assert columns.min() - 1 <= extra[1].min() and extra[1].max() <= columns.max() + 1  # and over it
    assert text_width("F\u0302 (norm)", 0.6) == text_width("F (norm)", 0.6)


def test_a_title_that_does_not_fit_is_an_error_not_cut():
    with pytest.raises(ValueError, match=r"'a long column title' is \d+ px wide at scale 0.6: more than the 42 px"):
        text_block(50, ["a long column title"], 0.6)


def test_the_colour_bar_runs_from_blue_to_red():
    bar = colour_bar(900, 0.55)
    row = bar[bar.shape[0] // 3].astype(int)
    coloured = np.append((row.max(axis=1) - row.min(axis=1)) > 60, False)  # not grey text or background
    starts = np.flatnonzero(coloured & ~np.roll(coloured, 1))
    ends = np.flatnonzero(coloured & ~np.roll(coloured, -1))
    start, end = max(zip(starts, ends), key=lambda run: run[1] - run[0])  # the ramp: the longest coloured run
    assert end - start > 200
    assert row[start][2] > 100 and row[start][0] < 10  # blue (RGB) at 0
    assert row[end][0] > 100 and row[end][2] < 10  # red at 1


def test_the_grid_places_each_picture_as_it_is():
    rng = np.random.default_rng(0)
    rows = [[(rng.random((150, 150, 3)) * 255).astype(np.uint8) for _ in range(3)] for _ in range(2)]
    grid = titled_grid(rows, column_titles=["image", "CAM", "S (sim)"], row_titles=[["row 1"], ["row 2"]],
                       caption=["what the grid shows"], groups=[("a model", 2)], footer=lambda w: colour_bar(w, 0.55))
    for row in rows:
        for picture in row:  # found unchanged somewhere in the grid
            top_left = picture[0, 0]
            ys, xs = np.nonzero((grid == top_left).all(axis=2))
            assert any(np.array_equal(grid[y : y + 150, x : x + 150], picture) for y, x in zip(ys, xs))
    with pytest.raises(ValueError, match="2 rows of \\[3, 3\\] pictures for 2 column titles"):
        titled_grid(rows, column_titles=["a", "b"], row_titles=[["1"], ["2"]], caption=["c"])
