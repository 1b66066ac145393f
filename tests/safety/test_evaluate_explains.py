"""`fastwsol evaluate`: finds the run's data from anywhere, says which paths it used, where it
wrote the JSON and the pictures, and what each metric means; pictures keep the aspect ratio."""

import json

import cv2
import numpy as np
import pytest

from fastwsol.checkpoint import load_trained
from fastwsol.cli import main
from fastwsol.data.metadata import read_split_metadata
from fastwsol.evaluate import sheet_picks
from fastwsol.io import load_checkpoint, save_atomic


@pytest.fixture
def relative_run(tiny_checkpoint, tiny_dataset, tmp_path):
    """The tiny run's best.pt as if trained in the dataset's folder with relative data paths."""
    state = load_checkpoint(tiny_checkpoint)
    state["config"]["data"].update(data_root="data", metadata_root="metadata")
    state["workdir"] = str(tiny_dataset.root)
    path = tmp_path / "run" / "best.pt"
    path.parent.mkdir()
    save_atomic(state, path)
    return path, state


def test_relative_paths_are_the_runs_not_the_current_folders(relative_run, tiny_dataset, tmp_path, monkeypatch, capsys):
    checkpoint, _ = relative_run
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    maps = tmp_path / "maps"
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--save-maps", str(maps)]) == 0
    out = capsys.readouterr().out
    assert f"data.data_root {tiny_dataset.root / 'data'} (the run's 'data', from {tiny_dataset.root})" in out
    assert f"wrote {checkpoint.parent / 'metrics_best_test_cam.json'}" in out
    assert f"pictures: 6 PNGs (one per image) and contact_sheet.png in {maps}" in out
    for metric in ("GT-known Loc:", "MaxBoxAccV2:", "Top-1 / Top-5 Loc:"):
        assert metric in out
    assert json.loads((checkpoint.parent / "metrics_best_test_cam.json").read_text())["num_images"] == 6


def test_older_checkpoints_and_explicit_roots(relative_run, tiny_dataset, tmp_path, monkeypatch, capsys):
    checkpoint, state = relative_run
    monkeypatch.chdir(tmp_path)
    del state["workdir"]  # a checkpoint from before the workdir was recorded: not found from here
    save_atomic(state, checkpoint)
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "the run's data.data_root 'data' has no SYNTHETIC folder" in err and "--data-root DIR" in err
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--out", str(tmp_path), "--split", "val",
                 "--data-root", str(tiny_dataset.data_root), "--metadata-root", str(tiny_dataset.metadata_root)]) == 0
    assert f"data.data_root {tiny_dataset.data_root} (given)" in capsys.readouterr().out
    # a checkpoint kept inside the folder it was trained in is found from its own location
    inside = tiny_dataset.root / "runs" / "r" / "best.pt"
    inside.parent.mkdir(parents=True)
    save_atomic(state, inside)
    assert main(["evaluate", "--checkpoint", str(inside), "--out", str(tmp_path)]) == 0
    assert f"from {tiny_dataset.root})" in capsys.readouterr().out


def test_pictures_keep_the_aspect_ratio_and_say_what_they_show(tiny_checkpoint, tiny_dataset, tmp_path):
    maps = tmp_path / "maps"
    assert main(["evaluate", "--checkpoint", str(tiny_checkpoint), "--save-maps", str(maps), "--out", str(tmp_path)]) == 0
    meta = read_split_metadata(tiny_dataset.metadata_root, tiny_dataset.dataset, "test")
    for image_id, (width, height) in zip(meta.image_ids, meta.sizes.tolist()):
        picture = cv2.imread(str(maps / image_id.replace(".jpg", "_cam.png")))
        scale = picture.shape[1] / width  # small images are enlarged by a whole factor
        assert scale == int(scale) and picture.shape[0] > height * scale  # + title and legend strips
    assert cv2.imread(str(maps / "contact_sheet.png")).shape[1] > 500


def test_sheet_picks_spread_over_classes():
    labels = np.repeat(np.arange(5), 10)
    picks = sheet_picks(labels, 8)
    assert sorted(labels[picks[:5]].tolist()) == [0, 1, 2, 3, 4]  # every class before any twice
    many = np.repeat(np.arange(200), 3)
    assert len(set(many[sheet_picks(many, 16)].tolist())) == 16  # 16 classes spread over 200
    assert sheet_picks(many, 16)[-1] > 500


def test_contact_sheet_shows_the_worst_cases(tiny_checkpoint, tmp_path, monkeypatch):
    import fastwsol.evaluate as evaluate

    monkeypatch.setattr(evaluate, "sheet_picks", lambda labels, count: [0])  # one spread pick: the rest are worst
    seen = {}
    original = evaluate.contact_sheet

    def sheet(tiles, titles, **kwargs):
        seen["titles"] = titles
        return original(tiles, titles=titles, **kwargs)

    monkeypatch.setattr(evaluate, "contact_sheet", sheet)
    trained = load_trained(tiny_checkpoint)
    evaluate.evaluate_checkpoint(trained, save_maps=tmp_path / "maps", out_dir=tmp_path, sheet_size=6)
    worst = [t for t in seen["titles"] if t.startswith("worst: ")]
    assert len(worst) == 3
    ious = [float(t.split("IoU ")[1].split()[0]) for t in worst]
    assert ious == sorted(ious) and seen["titles"][0].startswith("red circle (0)")
