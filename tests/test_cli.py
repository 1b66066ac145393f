"""The user's side: `fastwsol evaluate`, `localize`, `reproduce` on a tiny synthetic set and model."""

import json

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from fastwsol import __version__
from fastwsol.cli import main
from fastwsol.evaluate import box_to_original, scoremaps_for
from fastwsol.io import load_checkpoint


def read_png(path):
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert image is not None, f"{path} is not a readable PNG"
    return image


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and __version__ in capsys.readouterr().out
    assert main([]) == 0
    assert "evaluate" in capsys.readouterr().out


def test_evaluate_writes_json_and_pictures(tiny_checkpoint, tmp_path, capsys):
    maps_dir, out_dir = tmp_path / "maps", tmp_path / "out"
    assert main(["evaluate", "--checkpoint", str(tiny_checkpoint), "--save-maps", str(maps_dir), "--out", str(out_dir)]) == 0
    printed = capsys.readouterr().out
    assert "GT-known Loc" in printed and "maximises GT-known Loc" in printed
    metrics = json.loads((out_dir / "metrics_best_test_cam.json").read_text())
    assert metrics["num_images"] == 6 and metrics["split"] == "test" and metrics["map"] == "cam"
    assert 0 <= metrics["gt_known_loc"] <= 100 and 0 <= metrics["best_threshold"] < 1
    pictures = sorted(p for p in maps_dir.rglob("*.png") if p.name != "contact_sheet.png")
    assert len(pictures) == 6  # one per test image
    # the original image (enlarged by a whole factor when small), not the 224² input
    assert read_png(pictures[0]).shape[2] == 3 and read_png(pictures[0]).shape[:2] != (224, 224)
    assert read_png(maps_dir / "contact_sheet.png").ndim == 3


@pytest.mark.parametrize("kind", ["norm", "sim"])
def test_evaluate_map_variants(tiny_checkpoint, tmp_path, kind):
    assert main(["evaluate", "--checkpoint", str(tiny_checkpoint), "--split", "val", "--map", kind, "--out", str(tmp_path)]) == 0
    metrics = json.loads((tmp_path / f"metrics_best_val_{kind}.json").read_text())
    assert metrics["map"] == kind and metrics["num_images"] == 6


def test_an_unknown_map_is_refused_before_anything_is_read_or_written(tiny_checkpoint, tmp_path):
    from fastwsol.checkpoint import load_trained
    from fastwsol.evaluate import evaluate_checkpoint
    from fastwsol.localize import localize_images

    trained = load_trained(tiny_checkpoint)
    with pytest.raises(ValueError, match=r"map must be one of \('cam', 'norm', 'sim'\), got 'heat'"):
        evaluate_checkpoint(trained, map_kind="heat", out_dir=tmp_path)
    with pytest.raises(ValueError, match="got 'heat'"):
        localize_images(trained, [tmp_path / "missing.jpg"], map_kind="heat", out_dir=tmp_path)
    assert not list(tmp_path.iterdir())


def test_similarity_scoremap_is_max_normalised_with_negatives_as_background():
    feature = torch.zeros(1, 2, 1, 3)
    feature[0, :, 0, 0] = torch.tensor([1.0, 0.0])  # cos = 1 with w
    feature[0, :, 0, 1] = torch.tensor([-1.0, 0.0])  # cos = -1: background
    feature[0, :, 0, 2] = torch.tensor([1.0, 1.0])  # cos = 0.707
    scoremap = scoremaps_for(feature, torch.tensor([[1.0, 0.0]]), torch.tensor([0]), "sim")
    assert scoremap.shape == (1, 224, 224) and scoremap.max() == 1 and scoremap.min() == 0
    assert scoremap[0, :, 74:150].min() == 0  # the negative column's centre stays background


def write_test_images(folder):
    rng = np.random.default_rng(0)
    paths = {}
    paths["wide.jpg"] = folder / "wide.jpg"
    Image.fromarray(rng.integers(0, 255, (200, 300, 3), dtype=np.uint8)).save(paths["wide.jpg"])
    paths["tall.png"] = folder / "tall.png"
    Image.fromarray(rng.integers(0, 255, (500, 64, 4), dtype=np.uint8), "RGBA").save(paths["tall.png"])
    paths["gray.jpg"] = folder / "gray.jpg"
    Image.fromarray(rng.integers(0, 255, (90, 120), dtype=np.uint8), "L").save(paths["gray.jpg"])
    paths["cmyk.jpg"] = folder / "cmyk.jpg"
    Image.fromarray(rng.integers(0, 255, (150, 150, 3), dtype=np.uint8)).convert("CMYK").save(paths["cmyk.jpg"])
    paths["corrupt.jpg"] = folder / "corrupt.jpg"
    paths["corrupt.jpg"].write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return paths


def test_localize_any_size_and_format_and_a_bad_file_fails_alone(tiny_checkpoint, tmp_path, capsys):
    paths = write_test_images(tmp_path)
    out_dir = tmp_path / "overlays"
    code = main(["localize", str(tiny_checkpoint), *map(str, paths.values()), "--out", str(out_dir), "--json"])
    assert code == 1  # one file failed
    captured = capsys.readouterr()
    assert "corrupt.jpg" in captured.err and "cannot read image" in captured.err
    results = json.loads(captured.out)  # --json: stdout is the JSON alone
    good = {r["path"]: r for r in results if "error" not in r}
    assert len(good) == 4
    # the image enlarged by a whole factor towards 320 px wide, its longest side kept within 1024 px
    scales = {"wide.jpg": 2, "tall.png": 2, "gray.jpg": 3, "cmyk.jpg": 3}
    for name, expected_scale in scales.items():
        result = good[str(paths[name])]
        width, height = result["size"]
        x0, y0, x1, y1 = result["box"]
        assert 0 <= x0 <= x1 < width and 0 <= y0 <= y1 < height
        assert len(result["top_classes"]) == 3 and abs(sum(c["score"] for c in result["top_classes"]) - 1) < 1e-5
        picture = read_png(result["picture"])  # the image, a title above, a legend below
        assert picture.shape[1] == width * expected_scale and picture.shape[0] > height * expected_scale


def test_box_to_original():
    assert box_to_original([0, 0, 223, 223], 500, 375).tolist() == [0, 0, 499, 374]
    assert box_to_original([112, 0, 112, 0], 100, 100).tolist() == [50, 0, 50, 0]  # one pixel stays a pixel
    assert box_to_original([0, 0, 111, 111], 448, 448).tolist() == [0, 0, 223, 223]


def test_reproduce_end_to_end_on_a_tiny_set(tiny_run_overrides, tmp_path, capsys):
    from fastwsol.reproduce import RESULT_METRICS, reproduce

    overrides = [o for o in tiny_run_overrides(tmp_path / "unused") if not o.startswith("train.out_dir")]
    pretrain = [o for o in overrides if not o.startswith("model.name")]
    out = tmp_path / "reproduce"
    summary = reproduce(out, seeds=2, overrides=[*overrides, "optim.epochs=1", "optim.warm_epochs=0", "train.select_from_epoch=1"],
                        pretrain_overrides=[*pretrain, "optim.epochs=1"])
    assert set(summary["variants"]) == {"cam", "all"} and summary["seeds"] == [0, 1]
    # every fine-tuning of every seed starts from the one pretraining's backbone, with its own seed
    backbone = out / "pretrain" / "last.pt"
    assert summary["pretrain"]["test"]["top1_cls"] >= 0 and f"model.init_from={backbone}" in summary["overrides"]
    for seed in (0, 1):
        for key in ("cam", "all"):
            config = load_checkpoint(out / f"seed{seed}" / key / "last.pt")["config"]
            assert config["model"]["init_from"] == str(backbone) and config["train"]["seed"] == seed
    method = summary["variants"]["all"]
    assert len(method["test"]) == 2
    for key, _ in RESULT_METRICS:  # each metric's mean over the seeds' rows
        assert method["mean_sd"][key][0] == pytest.approx(sum(m[key] for m in method["test"]) / 2)
    gt_known = summary["method_minus_vanilla"]["gt_known_loc_single"]["per_seed"]
    assert gt_known == [m["gt_known_loc_single"] - v["gt_known_loc_single"]
                        for v, m in zip(summary["variants"]["cam"]["test"], method["test"])]
    assert set(summary["maps"]["method"]) == {"cam", "norm", "sim"}
    # per class: the tiny set's 3 classes have 2 test images each, so their mean is the run's figure
    for name, key in (("vanilla CAM", "cam"), ("method", "all")):
        for seed in (0, 1):
            classes = summary["per_class"][name][seed]
            assert len(classes["gt_known_loc_single"]) == len(classes["top1_cls"]) == 3
            run = summary["variants"][key]["test"][seed]
            assert sum(classes["gt_known_loc_single"]) / 3 == pytest.approx(run["gt_known_loc_single"])
            assert sum(classes["top1_cls"]) / 3 == pytest.approx(run["top1_cls"])
    report = (out / "results.md").read_text()
    for text in ("vanilla CAM", "the method", "GT-known Loc (single)", "inverted maps %", "## Every seed", " ± ",
                 "## Per class"):
        assert text in report
    figure = read_png(out / "maps_vanilla_vs_method.png")
    assert figure.shape[0] > 6 * 150 and figure.shape[1] > 7 * 150  # 6 rows × (1 + 2×3) columns of 150 px tiles
    # the end says where everything went
    end = "\n".join(capsys.readouterr().out.rstrip().splitlines()[-3:])
    for path in (out / "results.md", out / "results.json", out / "maps_vanilla_vs_method.png"):
        assert str(path) in end and path.is_file()


def test_make_synthetic_task_choices_are_the_generators():
    from fastwsol.cli.make_synthetic import TASK_CHOICES
    from fastwsol.data.synthetic import TASKS

    assert TASK_CHOICES == TASKS
