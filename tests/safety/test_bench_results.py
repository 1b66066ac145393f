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
