"""`fastwsol localize` on images far from the model's input: a huge photo is decoded reduced
(PIL's decompression-bomb warning becomes a one-line note) and drawn at a bounded size; a tiny one
is noted as enlarged; transparent pixels are composited on white, and the note says so."""

import warnings

import cv2
import numpy as np
from PIL import Image

from fastwsol.cli import main


def _large_jpeg(path, width=4000, height=3000):
    ramp = np.add.outer(np.arange(height) * 255 // height, np.arange(width) * 255 // width) // 2
    Image.fromarray(np.stack([ramp, 255 - ramp, ramp], -1).astype(np.uint8)).save(path, quality=80)
    return path


def test_a_huge_jpeg_gives_a_note_not_a_warning_and_a_bounded_overlay(tiny_checkpoint, tmp_path, monkeypatch, capsys):
    photo = _large_jpeg(tmp_path / "huge.jpg")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 8_000_000)  # 12 Mpx is then a "decompression bomb"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning that escaped would fail here
        assert main(["localize", str(tiny_checkpoint), str(photo), "--out", str(tmp_path / "pics")]) == 0
    captured = capsys.readouterr()
    notes = [line for line in captured.err.splitlines() if line.startswith("fastwsol localize: note:")]
    assert any(str(photo) in line and "decompression-bomb" in line for line in notes)
    assert any("at most 1024 px" in line for line in notes)
    assert "DecompressionBombWarning" not in captured.err
    line = next(line for line in captured.out.splitlines() if line.startswith(str(photo)))
    x0, y0, x1, y1 = map(int, line.split("box ")[1].split(";")[0].split(","))
    assert "(4000x3000)" in line and 0 <= x0 <= x1 < 4000 and 0 <= y0 <= y1 < 3000
    overlay = cv2.imread(str(tmp_path / "pics" / "huge_cam.png"))
    assert overlay.shape[1] == 1024 and overlay.shape[0] < 1024  # 1024x768, a title above, a legend below


def test_a_huge_jpeg_is_decoded_reduced(tmp_path):
    from fastwsol.localize import read_image

    loaded = read_image(_large_jpeg(tmp_path / "huge.jpg"), 224)
    assert (loaded.width, loaded.height) == (4000, 3000)  # boxes are given in these pixels
    assert 1024 <= loaded.rgb.width <= 2000 and 224 <= loaded.rgb.height <= 1500  # not 12 Mpx in memory


def test_a_tiny_image_is_noted_as_enlarged(tiny_checkpoint, tmp_path, capsys):
    tiny = tmp_path / "tiny.png"
    Image.fromarray(np.full((10, 10, 3), 200, np.uint8)).save(tiny)
    assert main(["localize", str(tiny_checkpoint), str(tiny)]) == 0
    note = [line for line in capsys.readouterr().err.splitlines() if str(tiny) in line]
    assert len(note) == 1 and "note:" in note[0] and "enlarged 6.4x to the model's 64x64 input" in note[0]


def test_transparent_pixels_are_composited_on_white_and_noted(tiny_checkpoint, tmp_path, capsys):
    from fastwsol.localize import read_image

    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[..., 0] = 30  # dark red where transparent: what convert("RGB") alone would show the model
    rgba[10:30, 10:30] = (0, 0, 255, 255)  # an opaque blue square
    path = tmp_path / "cutout.png"
    Image.fromarray(rgba, "RGBA").save(path)
    pixels = np.asarray(read_image(path, 64).rgb)
    assert pixels[0, 0].tolist() == [255, 255, 255] and pixels[20, 20].tolist() == [0, 0, 255]
    assert main(["localize", str(tiny_checkpoint), str(path)]) == 0
    assert f"note: {path}: transparent pixels composited on white" in capsys.readouterr().err
    opaque = tmp_path / "opaque.png"
    Image.fromarray(np.dstack([rgba[..., :3], np.full((40, 40), 255, np.uint8)]), "RGBA").save(opaque)
    assert main(["localize", str(tiny_checkpoint), str(opaque)]) == 0
    assert "note:" not in capsys.readouterr().err  # an opaque alpha channel changes nothing
