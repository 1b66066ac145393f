"""Benchmarks: a quick run never replaces a committed full result, --summary-only rewrites
nothing, and the summary names the run each figure comes from."""

import argparse
import json
import re

import pytest

from bench import common, run_all


@pytest.fixture
def bench(monkeypatch, tmp_path):
    """bench/common.py and bench/run_all.py, their results folders moved to ``tmp_path``."""
    results = tmp_path / "results"
    results.mkdir()
    for module in (common, run_all):
        monkeypatch.setattr(module, "RESULTS", results)
        monkeypatch.setattr(module, "QUICK_RESULTS", results / "quick")
    monkeypatch.delenv(common.QUICK_ENV, raising=False)
    return common, run_all, results


def _evaluator_parser():
    parser = argparse.ArgumentParser()
    parser.add_argument("--num-images", type=int, default=50000)
    return parser


def _evaluator_result(images):
    return {"num_images": images, "fast_seconds": 1.0, "fast_images_per_second": images, "speedup": 2.0}


def test_quick_runs_never_replace_a_full_result(bench, hashes, monkeypatch, capsys):
    common, run_all, results = bench
    parser = _evaluator_parser()
    full = common.save_results("evaluator", _evaluator_result(50000), [{"n": 50000}], parser=parser,
                               args=parser.parse_args([]))
    assert full == results / "evaluator.json" and json.loads(full.read_text())["run"]["kind"] == "full"
    before = hashes(results)

    # fewer images than the script's default: a quick result, kept apart
    quick = common.save_results("evaluator", _evaluator_result(5000), [{"n": 5000}], parser=parser,
                                args=parser.parse_args(["--num-images", "5000"]))
    assert quick == results / "quick" / "evaluator.json"
    # the default arguments, but under run_all.py --quick: quick as well
    monkeypatch.setenv(common.QUICK_ENV, "1")
    common.save_results("evaluator", _evaluator_result(50000), [{"n": 50000}], parser=parser, args=parser.parse_args([]))
    assert {k: v for k, v in hashes(results).items() if not k.startswith("quick/")} == before

    # the summary says which run each figure comes from; the quick view takes the quick result
    rows = run_all.summary_rows(quick=True)
    assert rows[0]["run"].startswith("quick ") and rows[0]["measurement"].startswith("50000 images")
    assert run_all.summary_rows(quick=False)[0]["run"].startswith("full ")


def test_summary_only_rewrites_nothing_unless_asked(bench, hashes, capsys):
    common, run_all, results = bench
    parser = _evaluator_parser()
    common.save_results("evaluator", _evaluator_result(50000), [{"n": 50000}], parser=parser, args=parser.parse_args([]))
    (results / "summary.json").write_text("the committed summary\n")
    before = hashes(results)
    capsys.readouterr()
    assert run_all.main(["--summary-only"]) == 0
    out = capsys.readouterr().out
    assert "run" in out and "full 20" in out and "wrote" not in out
    assert hashes(results) == before
    assert run_all.main(["--summary-only", "--write-summary"]) == 0
    assert json.loads((results / "summary.json").read_text())[0]["run"].startswith("full ")


def test_committed_results_without_a_run_record_name_their_commit():
    label = common.describe_run(common.RESULTS / "data.json", {"rows": []})
    assert re.fullmatch(r"full \d{4}-\d\d-\d\d [0-9a-f]{7,} \(committed\)", label), label


@pytest.mark.parametrize("speedup, verdict", [(2.0, "MISSED target"), (150.0, "met")])
def test_the_summary_marks_each_figure_that_misses_its_target(bench, capsys, speedup, verdict):
    common, run_all, results = bench
    parser = _evaluator_parser()
    # 5000 images in 1 s: 5000 img/s, above the 50,000 in 60 s target's 833 img/s
    result = {**_evaluator_result(5000), "speedup": speedup}
    common.save_results("evaluator", result, [{"n": 5000}], parser=parser, args=parser.parse_args([]))
    rows = {r["measurement"].split(" (")[0]: r for r in run_all.summary_rows()}
    assert rows["fast vs OpenCV reference"]["verdict"] == verdict
    assert rows["fast vs OpenCV reference"]["target"] == "≥ 100×"
    assert rows["5000 images end to end"]["verdict"] == "met"
    capsys.readouterr()
    assert run_all.main(["--summary-only"]) == 0
    out = capsys.readouterr().out
    if verdict == "met":
        assert "0 of 2 figures with a target miss it" in out and "MISSED" not in out
    else:
        assert "1 of 2 figures with a target miss it" in out
        assert "MISSED target: fast vs OpenCV reference (images/s; reference extrapolated from a subset): 2.0× (target ≥ 100×)" in out


def test_the_alignment_loss_verdicts_are_the_recorded_ones(bench):
    common, run_all, results = bench
    rows = [{"shape": "vgg16-cub", "variant": variant, "device": "cpu", "speedup_vs_paper": speed,
             "memory_ratio_vs_paper": 4.0, "speed_target": 3.0 if variant != "paper" else "",
             "speed_target_met": (speed >= 3.0) if variant != "paper" else "",
             "memory_target_met": True if variant != "paper" else ""}
            for variant, speed in (("paper", 1.0), ("compiled", 2.5), ("triton", 5.0))]
    parser = argparse.ArgumentParser()
    common.save_results("alignment_loss", {"targets": {"memory_ratio": 3.0}, "rows": rows}, rows, parser=parser,
                        args=parser.parse_args([]))
    verdicts = {r["measurement"].split()[4]: (r["verdict"], r["target"]) for r in run_all.summary_rows()}
    assert verdicts == {"compiled": ("MISSED target", "≥3.0× faster, ≥3× less memory"),
                        "triton": ("met", "≥3.0× faster, ≥3× less memory")}


def test_bench_quick_says_how_long_it_takes(capsys):
    from fastwsol.cli import main

    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    assert "about 7 min on a 2-core CPU" in " ".join(capsys.readouterr().out.split())
