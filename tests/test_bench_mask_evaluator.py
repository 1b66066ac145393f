"""bench/bench_mask_evaluator.py runs (a smoke test at a few images): both halves agree with their
reference, and its results land in the quick folder, never over a committed full result."""

import json

from bench import bench_mask_evaluator, common, run_all


def test_quick_run_agrees_with_the_references(monkeypatch, tmp_path, capsys):
    results = tmp_path / "results"
    for module in (common, run_all):
        monkeypatch.setattr(module, "RESULTS", results)
        monkeypatch.setattr(module, "QUICK_RESULTS", results / "quick")
    monkeypatch.delenv(common.QUICK_ENV, raising=False)
    bench_mask_evaluator.main(["--quick", "--images", "20", "--box-images", "6", "--mask-images", "8",
                               "--cam-curve-interval", "0.01"])
    saved = json.loads((results / "quick" / "mask_evaluator.json").read_text())
    assert saved["run"]["kind"] == "quick" and not (results / "mask_evaluator.json").exists()
    assert saved["mask_backends"]["equal"] and saved["mask_backends"]["images"] == 20
    assert saved["evaluate_maps_boxes"]["equal"] and saved["evaluate_maps_boxes"]["images"] == 6
    assert saved["evaluate_maps_masks"]["equal"] and saved["evaluate_maps_masks"]["images"] == 8
    assert "same result" in capsys.readouterr().out
    rows = [r for r in run_all.summary_rows(quick=True) if r["run"].startswith("quick")]
    assert len(rows) == 3 and all(r["verdict"] == "met" for r in rows)
