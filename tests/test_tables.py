"""``fastwsol.tables``: Markdown tables that keep one cell per header, and CSV rows."""

from __future__ import annotations

import csv
import io

import pytest

from fastwsol.tables import csv_text, markdown_table


def test_markdown_table_lines():
    text = markdown_table(("model", "GT-known", "top-1"), [("vanilla", 25.1, "99.7"), ("method", "", 3)])
    assert text.splitlines() == [
        "| model | GT-known | top-1 |",
        "|---|---|---|",
        "| vanilla | 25.1 | 99.7 |",
        "| method |  | 3 |",
    ]
    assert markdown_table(["a"], []) == "| a |\n|---|"


@pytest.mark.parametrize("row", [("one", "two"), ("one", "two", "three", "four")], ids=["fewer", "more"])
def test_a_row_of_another_width_is_an_error(row):
    with pytest.raises(ValueError, match=rf"row 1 has {len(row)} cells under 3 headers"):
        markdown_table(("a", "b", "c"), [("x", "y", "z"), row])


@pytest.mark.parametrize("cell", ["a | b", "two\nlines"], ids=["pipe", "line-break"])
def test_a_cell_that_would_split_is_an_error(cell):
    with pytest.raises(ValueError, match="cannot hold"):
        markdown_table(("a", "b"), [("x", cell)])
    with pytest.raises(ValueError, match="cannot hold"):
        markdown_table(("a", cell), [])


def test_csv_text_header_in_first_seen_order_or_given():
    rows = [{"op": "alignment_loss", "ms": 1.5}, {"op": "dropout, attentive", "gb_per_s": 900}]
    text = csv_text(rows)
    assert text.splitlines()[0] == "op,ms,gb_per_s"
    assert list(csv.DictReader(io.StringIO(text))) == [
        {"op": "alignment_loss", "ms": "1.5", "gb_per_s": ""},
        {"op": "dropout, attentive", "ms": "", "gb_per_s": "900"},
    ]
    assert csv_text(rows[:1], fields=["ms", "op"]).splitlines() == ["ms,op", "1.5,alignment_loss"]
