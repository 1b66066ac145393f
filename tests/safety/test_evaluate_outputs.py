"""`fastwsol evaluate`'s files: one metrics file per checkpoint, nothing replaced unless asked,
an unwritable output found before the evaluation, per-image results that add up to the
reported metrics, progress on stderr, and CUDA by default where there is one."""

import csv
import functools
import json
import shutil

import numpy as np
import pytest

import fastwsol.evaluate as evaluate
from fastwsol.cli import build_parser, main
from fastwsol.data.metadata import read_split_metadata
from fastwsol.evaluate import box_to_original
from fastwsol.evaluation import multiple_iou, resize_boxes
from fastwsol.progress import Progress


@pytest.fixture
def run(tiny_checkpoint, tmp_path):
    """A copy of the tiny run's best.pt and last.pt (evaluate writes beside them by default)."""
    folder = tmp_path / "run"
    folder.mkdir()
    for name in ("best.pt", "last.pt"):
        shutil.copy(tiny_checkpoint.parent / name, folder / name)
    return folder


def forbid_evaluation(monkeypatch):
    """Evaluating is a test failure: a refusal must come before the work."""
    monkeypatch.setattr(evaluate, "evaluate_model", lambda *a, **k: pytest.fail("evaluated before refusing"))


@pytest.fixture
def no_evaluation(monkeypatch):
    forbid_evaluation(monkeypatch)


def test_best_and_last_write_their_own_metrics(run, hashes, capsys):
    assert main(["evaluate", "--checkpoint", str(run / "best.pt")]) == 0
    best = hashes(run / "metrics_best_test_cam.json")
    assert main(["evaluate", "--checkpoint", str(run / "last.pt")]) == 0
    assert f"wrote {run / 'metrics_last_test_cam.json'}" in capsys.readouterr().out
    assert hashes(run / "metrics_best_test_cam.json") == best
    assert json.loads((run / "metrics_last_test_cam.json").read_text())["checkpoint"] == str(run / "last.pt")


def test_existing_metrics_are_refused_unless_overwrite(run, hashes, capsys, monkeypatch):
    assert main(["evaluate", "--checkpoint", str(run / "best.pt")]) == 0
    capsys.readouterr()
    before = hashes(run)
    with monkeypatch.context() as patch:
        forbid_evaluation(patch)
        assert main(["evaluate", "--checkpoint", str(run / "best.pt")]) == 2
    err = capsys.readouterr().err
    assert f"would replace {run / 'metrics_best_test_cam.json'} (--out)" in err and "--overwrite" in err
    assert hashes(run) == before
    assert main(["evaluate", "--checkpoint", str(run / "best.pt"), "--overwrite"]) == 0


def test_pictures_already_there_are_refused_unless_overwrite(run, tmp_path, hashes, capsys, monkeypatch):
    maps = tmp_path / "maps"
    maps.mkdir()
    (maps / "notes.txt").write_text("the user's")  # not one of evaluate's names: kept, not a reason to refuse
    assert main(["evaluate", "--checkpoint", str(run / "best.pt"), "--save-maps", str(maps)]) == 0
    assert (maps / "notes.txt").read_text() == "the user's"
    capsys.readouterr()
    before = hashes(maps)
    with monkeypatch.context() as patch:
        forbid_evaluation(patch)
        # into another --out: only the pictures are in the way
        assert main(["evaluate", "--checkpoint", str(run / "best.pt"), "--save-maps", str(maps),
                     "--out", str(tmp_path / "other")]) == 2
    err = capsys.readouterr().err
    assert f"would replace 7 files in {maps} (--save-maps) such as " in err and "--overwrite" in err
    assert hashes(maps) == before and not (tmp_path / "other").exists()
    assert main(["evaluate", "--checkpoint", str(run / "best.pt"), "--save-maps", str(maps), "--overwrite"]) == 0


@pytest.mark.parametrize("option", ["--out", "--save-maps", "--per-image", "--save-scoremaps"])
def test_an_unwritable_output_is_found_before_evaluating(option, tiny_checkpoint, tmp_path, capsys, no_evaluation):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    target = blocker / "sub" / ("results.csv" if option == "--per-image" else "")
    args = ["evaluate", "--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path / "out"), option, str(target)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"{option} {blocker / 'sub'}: cannot write there" in err
    assert blocker.read_text() == "not a folder"


def test_an_output_folder_that_is_a_file_is_refused(tiny_checkpoint, tmp_path, capsys, no_evaluation):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    assert main(["evaluate", "--checkpoint", str(tiny_checkpoint), "--out", str(blocker)]) == 2
    assert f"--out {blocker} is a file, not a folder" in capsys.readouterr().err


def test_per_image_needs_csv_or_json(tiny_checkpoint, tmp_path, capsys, no_evaluation):
    assert main(["evaluate", "--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path),
                 "--per-image", str(tmp_path / "rows.txt")]) == 2
    assert "--per-image" in capsys.readouterr().err and not (tmp_path / "rows.txt").exists()


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("multi_contour", [True, False])
def test_per_image_results_add_up_to_the_metrics(multi_contour, tiny_checkpoint, tiny_dataset, tmp_path):
    common = ["evaluate", "--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path),
              "--set", f"eval.multi_contour={str(multi_contour).lower()}"]
    assert main([*common, "--per-image", str(tmp_path / "images.csv")]) == 0
    assert main([*common, "--per-image", str(tmp_path / "images.json"), "--overwrite"]) == 0
    metrics = json.loads((tmp_path / "metrics_best_test_cam.json").read_text())
    rows = read_csv(tmp_path / "images.csv")
    document = json.loads((tmp_path / "images.json").read_text())
    assert document["threshold"] == metrics["best_threshold"] and document["split"] == "test"
    assert document["map"] == "cam" and document["checkpoint"] == str(tiny_checkpoint)
    meta = read_split_metadata(tiny_dataset.metadata_root, tiny_dataset.dataset, "test")
    assert [r["image_id"] for r in rows] == [r["image_id"] for r in document["images"]] == list(meta.image_ids)

    for text, value in zip(rows, document["images"]):  # the CSV and the JSON say the same
        assert {k: str(v) for k, v in value.items()} == text
    images = document["images"]
    for i, row in enumerate(images):
        box = [row[k] for k in ("x0_224", "y0_224", "x1_224", "y1_224")]
        width, height = (int(v) for v in meta.sizes[i])
        assert [row[k] for k in ("x0", "y0", "x1", "y1")] == box_to_original(box, width, height).tolist()
        gt = resize_boxes(meta.boxes[i], width, height)
        assert row["iou"] == pytest.approx(float(multiple_iou(np.array([box]), gt).max()))
        assert row["gt_known_correct"] == (row["iou"] >= 0.5) and row["gt_class"] == int(meta.labels[i])
        assert row["top1_correct"] == (row["predicted_class"] == row["gt_class"])
        assert row["any_contour_correct"] >= row["gt_known_correct"]
    credited = "any_contour_correct" if multi_contour else "gt_known_correct"
    assert 100 * np.mean([r[credited] for r in images]) == pytest.approx(metrics["gt_known_loc"])
    assert 100 * np.mean([r[credited] and r["top1_correct"] for r in images]) == pytest.approx(metrics["top1_loc"])
    assert 100 * np.mean([r["top1_correct"] for r in images]) == pytest.approx(metrics["top1_cls"])


def test_progress_on_stderr_without_a_terminal(tiny_checkpoint, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(evaluate, "Progress", functools.partial(Progress, interval=0.0))  # a line every batch
    assert main(["evaluate", "--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path),
                 "--set", "eval.batch_size=2"]) == 0
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.startswith("evaluate test: ")]
    assert lines[0].startswith("evaluate test: 1/3 (33 %), ") and "img/s" in lines[0] and "left" in lines[0]
    assert len(lines) == 2 and "evaluate test:" not in captured.out  # stdout stays the report


@pytest.mark.parametrize("available", [True, False])
def test_the_device_is_cuda_where_there_is_one(available, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
    args = build_parser().parse_args(["evaluate", "--checkpoint", "run/best.pt"])
    assert args.device == ("cuda" if available else "cpu")
    assert build_parser().parse_args(["evaluate", "--checkpoint", "x.pt", "--device", "cpu"]).device == "cpu"


def test_reproduce_evaluates_its_runs_again(run, hashes):
    from fastwsol.reproduce.run import evaluate_maps

    first = evaluate_maps(run)
    before = hashes(run / "metrics_best_test_cam.json")
    again = evaluate_maps(run)  # a second `fastwsol reproduce` writes the same files again, without a refusal
    assert again["cam"]["gt_known_loc"] == first["cam"]["gt_known_loc"]
    assert hashes(run / "metrics_best_test_cam.json") == before


def test_per_image_box_is_the_largest_contour_and_any_contour_is_credited():
    from types import SimpleNamespace

    import torch

    from fastwsol.evaluation import BoxEvaluator

    scoremap = torch.zeros(1, 224, 224)
    scoremap[0, 20:120, 20:120] = 1.0  # the largest contour, away from the object
    scoremap[0, 150:200, 150:200] = 0.9  # a smaller one on it
    gt = np.array([[150, 150, 199, 199]])  # 224² pixels; the original image is 448² (twice)
    meta = SimpleNamespace(image_ids=["a.jpg"], labels=np.array([3]), sizes=np.array([[448, 448]]), boxes=[gt * 2])
    results = evaluate.PerImageResults(meta)
    logits = torch.tensor([[0.0, 0.0, 5.0, 1.0, 0.0]])  # predicts class 2
    results({"indices": torch.tensor([0])}, scoremap, logits)
    (row,) = results.rows(0.5)
    assert [row[k] for k in ("x0_224", "y0_224", "x1_224", "y1_224")] == [20, 20, 120, 120]
    assert [row[k] for k in ("x0", "y0", "x1", "y1")] == [40, 40, 241, 241]
    assert row["iou"] == 0 and not row["gt_known_correct"] and row["any_contour_correct"]
    assert row["predicted_class"] == 2 and not row["top1_correct"] and row["gt_class"] == 3
    evaluator = BoxEvaluator(iou_thresholds=(50,), cam_curve_interval=0.5)  # thresholds 0 and 0.5
    assert evaluator.correct_at_thresholds(scoremap.numpy(), [gt])[0, 0, 1] == row["any_contour_correct"]
