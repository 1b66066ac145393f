"""`fastwsol localize` on many inputs: each bad one fails alone with a one-line error naming it,
folders and glob patterns give their images in order, `--json` prints only JSON, and
`--boxes-csv` / `--boxes-json` write one file of boxes (never replacing one unasked)."""

import csv
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from fastwsol.cli import build_parser, main


def _image(path, seed=0, size=(60, 80)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (*size, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture
def bad_then_good(tmp_path):
    """Bad inputs first (the case that once crashed before any good image was read), then good ones."""
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (tmp_path / "empty").mkdir()
    bad = [tmp_path / "missing.jpg", tmp_path / "notes.txt", tmp_path / "corrupt.jpg", tmp_path / "empty",
           tmp_path / "nothing*.png"]
    good = [_image(tmp_path / "good1.jpg", 1), _image(tmp_path / "good2.png", 2)]
    return bad, good


def test_every_bad_input_fails_alone_and_the_good_ones_are_processed(tiny_checkpoint, bad_then_good, capsys):
    bad, good = bad_then_good
    assert main(["localize", str(tiny_checkpoint), *map(str, bad), *map(str, good)]) == 1
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and "KeyError" not in captured.err
    errors = [line for line in captured.err.splitlines() if line.startswith("fastwsol localize: error:")]
    assert len(errors) == len(bad)  # one line each, in the order given
    for line, path in zip(errors, bad):
        assert str(path) in line
    assert "no such file" in errors[0] and "not an image file" in errors[1] and "holds no image file" in errors[3]
    assert "no image file matches" in errors[4]
    assert f"{len(bad)} of {len(bad) + len(good)} input(s) failed" in captured.err
    lines = captured.out.splitlines()
    assert "thresholded at" in lines[0]
    for path in good:
        assert any(line.startswith(f"{path} (") and "box " in line for line in lines[1:])


def test_json_alone_on_stdout(tiny_checkpoint, bad_then_good, capsys):
    bad, good = bad_then_good
    assert main(["localize", str(tiny_checkpoint), *map(str, bad), *map(str, good), "--json"]) == 1
    captured = capsys.readouterr()
    results = json.loads(captured.out)  # a script can parse stdout as it is
    assert [r["path"] for r in results] == [*map(str, bad), *map(str, good)]
    assert all("error" in r for r in results[: len(bad)]) and all("box" in r for r in results[len(bad) :])
    assert "thresholded at" in captured.err  # the header still reaches a person


def test_a_folder_and_a_pattern_give_their_images_sorted(tiny_checkpoint, tmp_path, capsys):
    photos = tmp_path / "photos"
    b, a, c = _image(photos / "b.jpg", 1), _image(photos / "a.png", 2), _image(photos / "sub" / "c.jpg", 3)
    (photos / "README.txt").write_text("not an image: a folder's other files are left out")
    assert main(["localize", str(tiny_checkpoint), str(photos), str(photos / "**" / "*.jpg"), "--json"]) == 0
    paths = [r["path"] for r in json.loads(capsys.readouterr().out)]
    assert paths == [str(a), str(b), str(b), str(c)]  # the folder (not its subfolder), then the pattern's


def test_boxes_csv_and_json_hold_one_row_per_input(tiny_checkpoint, bad_then_good, tmp_path, capsys):
    bad, good = bad_then_good
    boxes_csv, boxes_json = tmp_path / "out" / "boxes.csv", tmp_path / "out" / "boxes.json"
    argv = ["localize", str(tiny_checkpoint), str(bad[0]), *map(str, good), "--json"]
    assert main([*argv, "--boxes-csv", str(boxes_csv), "--boxes-json", str(boxes_json)]) == 1
    printed = json.loads(capsys.readouterr().out)
    assert json.loads(boxes_json.read_text()) == printed
    rows = list(csv.DictReader(io.StringIO(boxes_csv.read_text())))
    assert list(rows[0]) == ["file", "class", "class_name", "score", "x0", "y0", "x1", "y1", "width", "height",
                             "map", "threshold", "error", "notes"]
    assert [row["file"] for row in rows] == [r["path"] for r in printed]
    assert str(bad[0]) in rows[0]["error"] and rows[0]["x0"] == "" and rows[1]["error"] == ""
    for row, result in zip(rows[1:], printed[1:]):
        top = result["top_classes"][0]
        assert [int(row[k]) for k in ("x0", "y0", "x1", "y1")] == result["box"]
        assert int(row["class"]) == top["class"] and row["class_name"] == top["name"]
        assert float(row["score"]) == pytest.approx(top["score"], abs=1e-6)
        assert float(row["threshold"]) == result["threshold"] and row["map"] == "cam"
        assert [int(row["width"]), int(row["height"])] == result["size"]


def test_existing_boxes_files_are_refused_before_any_work_unless_overwrite(tiny_checkpoint, tmp_path, hashes,
                                                                           capsys):
    image = _image(tmp_path / "x.jpg")
    boxes = tmp_path / "boxes.csv"
    boxes.write_text("the user's own table\n")
    before = hashes(tmp_path)
    for flag in ("--boxes-csv", "--boxes-json"):
        assert main(["localize", str(tiny_checkpoint), str(image), flag, str(boxes), "--out", "pics"]) == 2
        err = capsys.readouterr().err
        assert f"{flag} {boxes} already exists" in err and "--overwrite" in err and "Traceback" not in err
    assert hashes(tmp_path) == before and not (tmp_path / "pics").exists()
    assert main(["localize", str(tiny_checkpoint), str(image), "--boxes-csv", str(boxes), "--overwrite"]) == 0
    assert boxes.read_text().startswith("file,class,")


def test_a_boxes_file_that_cannot_be_written_is_refused_before_any_work(tiny_checkpoint, tmp_path, capsys):
    image = _image(tmp_path / "x.jpg")
    (tmp_path / "a_file").write_text("x")
    assert main(["localize", str(tiny_checkpoint), str(image), "--boxes-json", str(tmp_path / "a_file" / "b.json"),
                 "--out", "pics"]) == 2
    assert "cannot write into" in capsys.readouterr().err and not (tmp_path / "pics").exists()


def test_many_images_show_progress(tiny_checkpoint, tmp_path, monkeypatch, capsys):
    import fastwsol.localize
    from fastwsol.progress import Progress

    def every_step(total, description, **kwargs):  # a log without a terminal, a line at every step
        return Progress(total, description, **{**kwargs, "terminal": False, "interval": 0.0})

    monkeypatch.setattr(fastwsol.localize, "Progress", every_step)
    folder = tmp_path / "many"
    for index in range(8):
        _image(folder / f"{index}.jpg", index)
    assert main(["localize", str(tiny_checkpoint), str(folder), "--json"]) == 0
    captured = capsys.readouterr()
    assert "localize: 4/8 (50 %)" in captured.err and "img/s" in captured.err
    assert len(json.loads(captured.out)) == 8


@pytest.mark.parametrize("available", [True, False])
def test_device_defaults_to_cuda_when_there_is_one(available, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
    assert build_parser().parse_args(["localize", "x.pt", "a.jpg"]).device == ("cuda" if available else "cpu")
    assert build_parser().parse_args(["localize", "x.pt", "a.jpg", "--device", "cpu"]).device == "cpu"
