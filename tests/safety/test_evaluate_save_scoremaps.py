"""`fastwsol evaluate --save-scoremaps`: every image's score map in the benchmark's layout, which
`fastwsol evaluate-maps` scores to evaluate's own metrics (boxes and masks), and nothing the user
had replaced unless asked."""

import json

import numpy as np
import pytest

import fastwsol.evaluate as evaluate
from fastwsol.checkpoint import load_trained
from fastwsol.cli import main
from fastwsol.cli.evaluate import SCOREMAP_DTYPES as CLI_DTYPES
from fastwsol.data.metadata import read_split_metadata
from fastwsol.evaluate_maps import scoremap_path

BOX_KEYS = (
    *("max_box_acc_v2", "box_acc", "gt_known_loc", "best_threshold"),
    *("max_box_acc_v2_single", "box_acc_single", "gt_known_loc_single"),
    *("inverted_pct", "peak_in_gt_pct"),
)
MASK_KEYS = ("pxap", "piou", "best_threshold")


def evaluate_maps_args(checkpoint, scoremaps, out, metadata_root, dataset: str) -> list[str]:
    """`fastwsol evaluate-maps` on ``scoremaps`` with the run's evaluation settings."""
    e = load_trained(checkpoint).config.eval
    return [
        "evaluate-maps", "--scoremap-root", str(scoremaps), "--dataset", dataset, "--split", "test",
        "--metadata-root", str(metadata_root), "--cam-curve-interval", str(e.cam_curve_interval),
        "--iou-thresholds", *map(str, e.iou_thresholds), "--multi-contour" if e.multi_contour else "--no-multi-contour",
        "--out", str(out),
    ]


def test_the_cli_dtypes_are_the_librarys():
    assert CLI_DTYPES == evaluate.SCOREMAP_DTYPES


def test_box_maps_round_trip_through_evaluate_maps(tiny_checkpoint, tiny_dataset, tmp_path, capsys):
    maps, out = tmp_path / "maps", tmp_path / "out"
    assert main(["evaluate", "--checkpoint", str(tiny_checkpoint), "--save-scoremaps", str(maps), "--out", str(out)]) == 0
    image_ids = read_split_metadata(tiny_dataset.metadata_root, tiny_dataset.dataset, "test").image_ids
    assert f"score maps: {len(image_ids)} float32 .npy files (one per image) in {maps}" in capsys.readouterr().out
    assert sorted(p.relative_to(maps).as_posix() for p in maps.rglob("*") if p.is_file()) == sorted(
        scoremap_path(maps, image_id).relative_to(maps).as_posix() for image_id in image_ids
    )
    for image_id in image_ids:
        scoremap = np.load(scoremap_path(maps, image_id))
        assert scoremap.shape == (224, 224) and scoremap.dtype == np.float32
        assert 0 <= scoremap.min() and scoremap.max() <= 1
    metrics = json.loads((out / "metrics_best_test_cam.json").read_text())

    args = evaluate_maps_args(tiny_checkpoint, maps, tmp_path / "scored", tiny_dataset.metadata_root,
                              tiny_dataset.dataset)
    assert main(args) == 0
    scored = json.loads((tmp_path / "scored" / f"evaluate_maps_{tiny_dataset.dataset}_test.json").read_text())
    for key in BOX_KEYS:
        assert scored[key] == metrics[key], key


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_mask_maps_round_trip_through_evaluate_maps(dtype, tiny_openimages_run, tiny_openimages, tmp_path, capsys):
    checkpoint, maps, out = tiny_openimages_run / "best.pt", tmp_path / "maps", tmp_path / "out"
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--save-scoremaps", str(maps), "--out", str(out),
                 "--scoremap-dtype", dtype, "--device", "cpu"]) == 0
    image_ids = read_split_metadata(tiny_openimages.metadata_root, "OpenImages", "test").image_ids
    for image_id in image_ids:
        scoremap = np.load(scoremap_path(maps, image_id))
        assert scoremap.shape == (224, 224) and scoremap.dtype == np.dtype(dtype)
    assert len(list(maps.rglob("*.npy"))) == len(image_ids)
    metrics = json.loads((out / "metrics_best_test_cam.json").read_text())

    args = evaluate_maps_args(checkpoint, maps, tmp_path / "scored", tiny_openimages.metadata_root, "OpenImages")
    assert main([*args, "--mask-root", str(tiny_openimages.data_root)]) == 0
    scored = json.loads((tmp_path / "scored" / "evaluate_maps_OpenImages_test.json").read_text())
    for key in MASK_KEYS:
        assert scored[key] == metrics[key], key


def test_maps_already_there_are_refused_unless_overwrite(tiny_checkpoint, tiny_dataset, tmp_path, hashes, capsys,
                                                         monkeypatch):
    image_ids = read_split_metadata(tiny_dataset.metadata_root, tiny_dataset.dataset, "test").image_ids
    maps = tmp_path / "maps"
    mine = scoremap_path(maps, image_ids[0])
    mine.parent.mkdir(parents=True)
    np.save(mine, np.full((224, 224), 0.5, np.float32))  # a map of the user's, under evaluate's name
    (maps / "notes.txt").write_text("the user's")  # not one of evaluate's names: kept, not a reason to refuse
    before = hashes(maps)
    args = ["evaluate", "--checkpoint", str(tiny_checkpoint), "--save-scoremaps", str(maps),
            "--out", str(tmp_path / "out")]
    with monkeypatch.context() as patch:
        patch.setattr(evaluate, "evaluate_model", lambda *a, **k: pytest.fail("evaluated before refusing"))
        assert main(args) == 2
        err = capsys.readouterr().err
        assert f"would replace {mine} (--save-scoremaps)" in err and "--overwrite" in err
        assert hashes(maps) == before and not (tmp_path / "out").exists()

        others = [scoremap_path(maps, image_id) for image_id in image_ids[1:3]]
        for path in others:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"the user's")
        before = hashes(maps)
        assert main(args) == 2
        err = capsys.readouterr().err
        assert f"would replace 3 files in {maps} (--save-scoremaps) such as {mine.relative_to(maps)}" in err
        assert hashes(maps) == before and not (tmp_path / "out").exists()

    assert main([*args, "--overwrite"]) == 0
    assert (maps / "notes.txt").read_text() == "the user's"
    for path in (mine, *others):
        assert np.load(path).shape == (224, 224)
    assert not np.array_equal(np.load(mine), np.full((224, 224), 0.5, np.float32))
    assert not [p for p in maps.rglob("*") if p.name.startswith(".")]  # no temporary file left
