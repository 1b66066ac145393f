"""``fastwsol.reproduce.report`` on hand-made results (no training): the summary's figures and
the Markdown report's tables, from the summary and from its JSON read back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fastwsol.reproduce.plan import ABLATION, METHOD, VANILLA
from fastwsol.reproduce.report import RESULT_METRICS, build_summary, report_markdown


def _run(gt_known: float, top1: float, inverted: float = 0.0, seconds: float = 60.0) -> dict:
    """A run's test metrics: GT-known Loc in both contour modes, the other boxes 5 points lower."""
    return {"gt_known_loc": gt_known, "gt_known_loc_single": gt_known, "max_box_acc_v2": gt_known - 5,
            "max_box_acc_v2_single": gt_known - 5, "top1_loc": gt_known - 1, "inverted_pct": inverted,
            "peak_in_gt_pct": 90.0, "top1_cls": top1, "num_images": 500, "train_seconds": seconds}


def _map_row(value: float) -> dict:
    return {key: value for key in ("top1_loc", "gt_known_loc", "gt_known_loc_single", "max_box_acc_v2",
                                   "max_box_acc_v2_single", "inverted_pct")}


def _summary(seeds: list[int], ablation: bool = False) -> dict:
    vanilla = [_run(25.0, 99.0, inverted=2.0), _run(35.0, 97.0)][: len(seeds)]
    method = [_run(35.0, 98.0), _run(55.0, 99.0, inverted=4.0)][: len(seeds)]
    variants = (VANILLA, *(ABLATION[:1] if ablation else ()), METHOD)
    results = {VANILLA.key: vanilla, METHOD.key: method}
    if ablation:
        results[ABLATION[0].key] = [_run(30.0, 98.0) for _ in seeds]
    per_class = {name: [{"class_names": ["red", "green"], "gt_known_loc_single": [g, g + 10], "top1_cls": [100.0, 96.0]}
                        for g in (20.0, 30.0)][: len(seeds)] for name in ("vanilla CAM", "method")}
    return build_summary(
        overrides=["model.init_from=runs/x/pretrain/last.pt", "optim.epochs=2"],
        pretrain_overrides=[],
        seeds=seeds,
        pretrained={"top1_cls": 46.54, "gt_known_loc": 69.5, "train_seconds": 300.0},
        variants=variants,
        results=results,
        per_map={"vanilla CAM": {"cam": _map_row(25.0)}, "method": {"cam": _map_row(35.0), "sim": _map_row(40.125)}},
        per_class=per_class,
        figure=Path("runs/x/maps_vanilla_vs_method.png"),
        seconds=900.0,
        stage_seconds={"pretrain": 300.0},
    )


def test_summary_figures():
    summary = _summary([0, 1], ablation=True)
    assert list(summary["variants"]) == ["cam", "drop", "all"]  # the order of the runs, the method last
    assert summary["test_images"] == 500 and summary["figure"] == "runs/x/maps_vanilla_vs_method.png"
    method = summary["variants"]["all"]
    assert method["label"] == METHOD.label and method["overrides"] == list(METHOD.overrides)
    mean, sd = method["mean_sd"]["gt_known_loc"]
    assert mean == 45.0 and sd == pytest.approx(200**0.5)  # (35, 55): sample sd √200
    assert set(method["mean_sd"]) == {key for key, _ in RESULT_METRICS}
    margins = summary["method_minus_vanilla"]
    assert margins["gt_known_loc_single"]["per_seed"] == [10.0, 20.0]
    assert margins["top1_cls"]["per_seed"] == [-1.0, 2.0]
    assert margins["inverted_pct_max"]["per_seed"] == [2.0, 4.0]  # the worse model of each seed
    assert summary["train_seconds"] == {"pretrain": 300.0, "fine_tuning": 6 * 60.0}
    assert _summary([0])["variants"]["all"]["mean_sd"]["gt_known_loc"] == (35.0, None)


def test_report_tables_from_the_summary_and_from_its_json():
    summary = _summary([0, 1])
    text = report_markdown(summary)
    assert text == report_markdown(json.loads(json.dumps(summary)))  # results.json renders results.md
    lines = text.splitlines()
    assert lines[0] == "# fastwsol reproduction on the synthetic dataset"
    assert ("Config `configs/synthetic.yaml` with model.init_from=runs/x/pretrain/last.pt, optim.epochs=2; "
            "test split (500 images), CAM of the ground-truth class, training seeds 0, 1 (mean ± sd); "
            "15.0 min on this machine for this call; training time as the runs recorded it: pretraining 5.0 min, "
            "4 fine-tunings 4.0 min.") in lines
    assert "(objects task, its own test split: top-1 46.5 %, CAM GT-known Loc 69.5)." in text
    assert ("| none (vanilla CAM) | 30.00 ± 7.07 | 30.00 ± 7.07 | 25.00 ± 7.07 | 25.00 ± 7.07 | 29.00 ± 7.07 "
            "| 1.00 ± 1.41 | 90.00 ± 0.00 | 98.00 ± 1.41 |") in lines
    assert "| method − vanilla | seed 0 | seed 1 | mean ± sd |" in lines
    assert "| GT-known Loc (single) | +10.00 | +20.00 | 15.00 ± 7.07 |" in lines
    assert "| inverted maps %, worse model | 2.00 | 4.00 | 3.00 ± 1.41 |" in lines
    assert "| 1 | L_drop + L_sim + L_norm (the method) | 55.00 | 55.00 | 50.00 | 50.00 | 54.00 | 4.00 | 90.00 | 99.00 |" in lines
    assert "| seed | model | red | green |" in lines and "| 1 | method | 30 / 100 | 40 / 96 |" in lines
    assert "| method | sim | 40.12 | 40.12 / 40.12 | 40.12 / 40.12 | 40.1 |" in lines
    assert text.endswith("\n\nFigure (seed 0): `maps_vanilla_vs_method.png`.\n")
    sections = [line for line in lines if line.startswith("## ")]
    assert sections == ["## Losses (paper's Table 7)", "## Method − vanilla CAM", "## Every seed",
                        "## Per class (GT-known Loc with a single contour at the split's optimal threshold / top-1)",
                        "## Localisation map (paper's Table 5), seed 0"]


def test_one_seed_report():
    text = report_markdown(_summary([0]))
    assert "training seed 0;" in text and "2 fine-tunings 2.0 min" in text and "## Every seed" not in text
    assert "| none (vanilla CAM) | 25.00 | 25.00 | 20.00 | 20.00 | 24.00 | 2.00 | 90.00 | 99.00 |" in text.splitlines()
