"""`fastwsol localize --out`: one overlay per image, never an existing file replaced unasked."""

import numpy as np
from PIL import Image

from fastwsol.cli import main


def _image(path, seed):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (80, 120, 3), dtype=np.uint8)).save(path)
    return path


def test_same_names_in_two_folders_give_two_overlays(tiny_checkpoint, tmp_path, capsys):
    a, b = _image(tmp_path / "A" / "x.jpg", 0), _image(tmp_path / "B" / "x.jpg", 1)
    out = tmp_path / "out"
    assert main(["localize", str(tiny_checkpoint), str(a), str(b), "--out", str(out)]) == 0
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*.png"))
    assert written == ["A/x_cam.png", "B/x_cam.png"]
    printed = capsys.readouterr().out
    assert str(out / "A" / "x_cam.png") in printed and str(out / "B" / "x_cam.png") in printed


def test_one_folder_stays_flat_and_a_repeated_file_gets_a_suffix(tiny_checkpoint, tmp_path):
    a = _image(tmp_path / "x.jpg", 0)
    out = tmp_path / "out"
    assert main(["localize", str(tiny_checkpoint), str(a), str(a), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["x_cam.png", "x_cam_2.png"]


def test_existing_overlays_are_refused_unless_overwrite(tiny_checkpoint, tmp_path, hashes, capsys):
    a, b = _image(tmp_path / "x.jpg", 0), _image(tmp_path / "y.jpg", 1)
    out = tmp_path / "out"
    out.mkdir()
    (out / "x_cam.png").write_bytes(b"the user's own picture")
    before = hashes(out)
    assert main(["localize", str(tiny_checkpoint), str(a), str(b), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(out / "x_cam.png") in err and "--overwrite" in err and "Traceback" not in err
    assert hashes(out) == before  # nothing written, not even y's overlay
    assert main(["localize", str(tiny_checkpoint), str(a), str(b), "--out", str(out), "--overwrite"]) == 0
    assert hashes(out)["x_cam.png"] != before["x_cam.png"] and (out / "y_cam.png").is_file()
