"""`fastwsol make-synthetic OUT`: an identical set is reused, anything else is refused unless
--overwrite, which replaces only an earlier set's files."""

import json

from fastwsol.cli import main

SMALL = ["--classes", "2", "--train-per-class", "2", "--test-per-class", "1"]


def _make(out, *extra):
    return main(["make-synthetic", str(out), *SMALL, *extra])


def test_a_folder_of_something_else_is_refused_even_with_overwrite(tmp_path, hashes, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "holiday.jpg").write_bytes(b"not a synthetic image")
    before = hashes(out)
    for extra in ((), ("--overwrite",)):
        assert _make(out, *extra) == 2
        err = capsys.readouterr().err
        assert str(out) in err and "holiday.jpg" in err and "synthetic.json" in err and "Traceback" not in err
        assert hashes(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]  # no temporary folder left behind


def test_a_file_is_refused(tmp_path, hashes, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    before = hashes(tmp_path)
    assert _make(afile) == 2
    assert "is a file, not a folder" in capsys.readouterr().err and hashes(tmp_path) == before


def test_same_parameters_reused_other_parameters_refused_then_replaced(tmp_path, hashes, capsys):
    out = tmp_path / "set"
    assert _make(out, "--seed", "1") == 0
    (out / "notes.txt").write_text("the user's notes")
    before = hashes(out)
    capsys.readouterr()
    assert _make(out, "--seed", "1") == 0  # the same set: reused, nothing rewritten
    assert "reused" in capsys.readouterr().out and hashes(out) == before

    # an older, larger set: refused, then replaced with --overwrite, the stale images gone
    assert _make(out, "--seed", "1", "--train-per-class", "1") == 2
    err = capsys.readouterr().err
    assert "other parameters" in err and "train_per_class 2 -> 1" in err and "--overwrite" in err
    assert hashes(out) == before
    assert _make(out, "--seed", "1", "--train-per-class", "1", "--overwrite") == 0
    after = hashes(out)
    assert after["notes.txt"] == before["notes.txt"]  # a file it did not write stays
    assert "data/SYNTHETIC/c00/train_0001.jpg" in before and "data/SYNTHETIC/c00/train_0001.jpg" not in after
    assert json.loads((out / "synthetic.json").read_text())["train_per_class"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"]
