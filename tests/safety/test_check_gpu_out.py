"""``fastwsol check-gpu --out``: a folder it cannot write, or one holding a report, is refused at
the start, before any row runs, and nothing the user had there changes."""

from __future__ import annotations

import pytest

from fastwsol.check_gpu import plan
from fastwsol.cli import main as cli_main


@pytest.fixture
def no_rows(monkeypatch):
    """Fail the test if the run gets as far as planning its rows."""

    def refuse(settings):
        raise AssertionError("rows were planned before --out was checked")

    monkeypatch.setattr(plan, "build_rows", refuse)


def test_an_unwritable_out_is_refused_before_any_row(tmp_path, hashes, capsys, no_rows):
    blocker = tmp_path / "a-file"
    blocker.write_text("the user's file\n")
    before = hashes(tmp_path)
    assert cli_main(["check-gpu", "--dry-run", "--out", str(blocker / "report")]) == 2
    assert "cannot write the report there" in capsys.readouterr().err
    assert hashes(tmp_path) == before


def test_an_existing_report_is_kept_without_force(tmp_path, hashes, capsys, no_rows):
    (tmp_path / "report.json").write_text("{}\n")
    (tmp_path / "report.md").write_text("# an earlier report\n")
    before = hashes(tmp_path)
    assert cli_main(["check-gpu", "--dry-run", "--out", str(tmp_path)]) == 2
    assert "--force" in capsys.readouterr().err
    assert hashes(tmp_path) == before
