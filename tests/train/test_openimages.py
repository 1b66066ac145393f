"""`fastwsol train` and `fastwsol evaluate` on an OpenImages30k-like split: images without listed
sizes, GT masks instead of boxes, scored by PxAP and PIoU (tests/conftest.py's tiny tree)."""

import json
import types

import pytest
import torch

from fastwsol.checkpoint import load_trained
from fastwsol.cli import main
from fastwsol.config import ConfigError, load_config
from fastwsol.data import loader_from_config, normalize_on_device
from fastwsol.evaluate import evaluate_model, locate_data, scoremaps_for
from fastwsol.evaluation import MaskEvaluator, load_gt_masks
from fastwsol.train import Trainer

BOX_KEYS = ("max_box_acc_v2", "gt_known_loc", "top1_loc", "inverted_pct")


def reference_mask_metrics(trained, config, split: str) -> dict:
    """A MaskEvaluator fed the model's score maps (batches as evaluate's, so the float sums are the
    same) and the GT masks read from the files each image's metadata names."""
    loader = loader_from_config(config, split, batch_size=config.eval.batch_size, device="cpu", train=False)
    evaluator = MaskEvaluator(cam_curve_interval=config.eval.cam_curve_interval)
    model = trained.model.eval()
    with torch.no_grad():
        for batch in loader:
            out = model(normalize_on_device(batch["images"]))
            scoremaps = scoremaps_for(out["feature"], model.fc.weight, batch["labels"], config.eval.map)
            annotations = [loader.metadata.masks[i] for i in batch["indices"].tolist()]
            evaluator.accumulate(scoremaps, load_gt_masks(loader.mask_dir, annotations))
    return evaluator.compute()


def test_train_selects_by_pxap_and_evaluate_scores_the_masks(tiny_openimages_run, tmp_path, capsys):
    recorded = json.loads((tiny_openimages_run / "test_metrics.json").read_text())
    assert {"pxap", "piou", "best_threshold", "top1_cls", "top5_cls"} <= set(recorded)
    assert not set(BOX_KEYS) & set(recorded) and recorded["num_images"] == 3
    state = torch.load(tiny_openimages_run / "best.pt", weights_only=False)
    val = [json.loads(line) for line in (tiny_openimages_run / "metrics.jsonl").read_text().splitlines()]
    assert state["best"]["metric"] == next(r["val_pxap"] for r in val if "val_pxap" in r)

    checkpoint = tiny_openimages_run / "best.pt"
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--out", str(tmp_path), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "PxAP" in out and "PIoU:" in out and "GT-known" not in out
    metrics = json.loads((tmp_path / "metrics_best_test_cam.json").read_text())
    trained = load_trained(checkpoint)
    expected = reference_mask_metrics(trained, locate_data(trained)[0], "test")
    for key in ("pxap", "piou", "best_threshold", "num_images"):
        assert metrics[key] == pytest.approx(expected[key], abs=1e-9), key
    assert metrics["pxap"] == pytest.approx(recorded["pxap"], abs=1e-9)  # the run tested best.pt too
    assert not set(BOX_KEYS) & set(metrics)


def test_ranks_sum_the_mask_evaluators_state(tiny_openimages_run, monkeypatch):
    """Under DDP each rank's histograms are summed: two ranks holding the same maps give the
    metrics of one, over twice the images."""
    trained = load_trained(tiny_openimages_run / "best.pt")
    config = locate_data(trained)[0]
    loader = loader_from_config(config, "val", batch_size=4, device="cpu", train=False)
    alone = evaluate_model(trained.model, loader, config)
    monkeypatch.setattr("fastwsol.evaluate.dist.all_reduce", lambda tensor: tensor.mul_(2))
    summed = evaluate_model(trained.model, loader, config, types.SimpleNamespace(enabled=True))
    assert summed["num_images"] == 2 * alone["num_images"] == 4
    for key in ("pxap", "piou", "best_threshold", "top1_cls"):
        assert summed[key] == pytest.approx(alone[key], abs=1e-9), key


def test_a_box_select_metric_on_openimages_is_refused(tiny_openimages_overrides, tmp_path):
    with pytest.raises(ConfigError, match=r"train\.select_metric: 'max_box_acc_v2' is a box metric, but "
                                          r"data\.dataset OpenImages is localised by masks: choose one of \['pxap'"):
        load_config(None, tiny_openimages_overrides(tmp_path / "run", "train.select_metric=max_box_acc_v2"))


def test_a_dataset_known_by_its_metadata_only_is_checked_when_the_run_starts(tiny_openimages, tmp_path):
    """A mask dataset under another name: the config cannot know, the Trainer reads the val
    metadata and refuses a box metric before anything is trained."""
    for kind in ("images", "metadata"):
        (tmp_path / kind).mkdir()
        (tmp_path / kind / "Masks").symlink_to(tiny_openimages.root / kind / "OpenImages")
    overrides = [f"data.data_root={tmp_path / 'images'}", f"data.metadata_root={tmp_path / 'metadata'}",
                 "data.dataset=Masks", "data.loader=torch", "data.num_threads=0", "model.name=vgg_small",
                 "train.select_metric=gt_known_loc", f"train.out_dir={tmp_path / 'run'}"]
    with pytest.raises(ValueError, match=r"train\.select_metric: 'gt_known_loc' is a box metric, but Masks's val "
                                         r"split is localised by masks"):
        Trainer(load_config(None, overrides))
    assert not (tmp_path / "run").exists()


def test_per_image_results_and_pictures_are_refused_for_masks(tiny_openimages_run, tmp_path, capsys):
    checkpoint = str(tiny_openimages_run / "best.pt")
    for option, value in (("--per-image", tmp_path / "rows.csv"), ("--save-maps", tmp_path / "maps")):
        assert main(["evaluate", "--checkpoint", checkpoint, "--out", str(tmp_path), option, str(value)]) == 2
        assert f"{option}: per-image results and pictures compare boxes" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_a_loader_reads_sizes_from_the_images_when_the_split_lists_none(tiny_openimages):
    from fastwsol.data import build_loader

    loader = build_loader(tiny_openimages.data_root, tiny_openimages.metadata_root, "OpenImages", "train",
                          train=True, batch_size=2, loader="torch", num_threads=0, image_size=32, resize_size=40)
    assert loader.metadata.sizes is None
    assert loader.checked.sizes.tolist() == [[80, 60], [64, 64], [96, 72], [72, 90]]
    assert [tuple(b["images"].shape) for b in loader] == [(2, 3, 32, 32)] * 2
