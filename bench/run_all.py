"""Run every benchmark of bench/ and print one summary table (kernels, evaluator, data, training
step). ``fastwsol bench`` calls this.

    python -m bench.run_all [--quick] [--only NAME ...] [--summary-only [--write-summary]]

Each benchmark runs as its own process (as a user would run it) and writes its own results
file; the summary is read back from those files, so it only shows figures that were measured,
each row names the run it comes from (full or quick, date, commit), and each figure with a
target is marked met or MISSED (missed ones are listed again below the table). Full runs write
``bench/results/`` (committed) and ``summary.{json,csv}`` there; ``--quick`` runs write
``bench/results/quick/`` (git-ignored) and never replace a full result (bench/common.py);
``--summary-only`` prints and writes nothing unless ``--write-summary``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time

from bench.common import QUICK_ENV, QUICK_RESULTS, RESULTS, ROOT, csv_text, describe_run, format_table
from fastwsol.io import write_text_atomic

# name → (module, arguments for the full run, arguments for --quick)
BENCHMARKS = {
    "kernels_gpu_build": ("bench.bench_kernels_gpu_build", [], []),
    "alignment_loss": ("bench.bench_alignment_loss", [], ["--repeats", "3", "--shapes", "vgg16-cub", "vgg16-imagenet"]),
    "dropout_consistency": ("bench.bench_dropout_consistency", [], ["--quick", "--repeats", "3"]),
    "evaluator": ("bench.bench_evaluator", [], ["--num-images", "5000", "--reference-images", "100"]),
    "mask_evaluator": ("bench.bench_mask_evaluator", [], ["--quick"]),
    "data": ("bench.bench_data", [], []),
    "train_step": ("bench.bench_train_step", [], ["--quick", "--repeats", "3"]),
}

# The targets the summary checks figures against where a benchmark's results do not record
# their own (the alignment loss records its targets and verdicts; the scripts print these).
EVALUATOR_TARGET = (50_000, 60)  # images, seconds end to end
EVALUATOR_SPEEDUP_TARGET = 100.0  # fast path vs the OpenCV reference, images/s
DALI_SPEEDUP_TARGET = 1.5  # DALI vs the torch loader on CPU, images/s
TRAIN_STEP_SPEEDUP_TARGET = 1.5  # compiled vs eager step
MISSED = "MISSED target"


def results_folder(name: str, quick: bool):
    """A quick view takes a benchmark's quick results where there are any, else the full ones."""
    return QUICK_RESULTS if quick and (QUICK_RESULTS / f"{name}.json").is_file() else RESULTS


def summary_rows(quick: bool = False) -> list[dict]:
    """(area, measurement, value, target, run) from the saved results of each benchmark."""
    rows = []
    runs = {}

    def _json(name: str) -> dict:
        path = results_folder(name, quick) / f"{name}.json"
        payload = json.loads(path.read_text()) if path.is_file() else {}
        runs[name] = describe_run(path, payload) if payload else ""
        return payload

    def _csv_rows(name: str) -> list[dict]:
        _json(name)  # the run the CSV belongs to
        path = results_folder(name, quick) / f"{name}.csv"
        return list(csv.DictReader(path.open())) if path.is_file() else []

    def add(name, area, what, value, target="", met=None):
        verdict = "" if met is None else ("met" if met else MISSED)
        rows.append({"area": area, "measurement": what, "value": value, "target": target, "verdict": verdict,
                     "run": runs[name]})

    builds = _csv_rows("kernels_gpu_build")
    if builds:
        kernels = {r["kernel"] for r in builds}
        archs = sorted({r["arch"] for r in builds})
        spills = sum(int(r["spill_bytes"]) for r in builds)
        add("kernels_gpu_build", "kernels", f"GPU builds ({', '.join(archs)})", f"{len(kernels)} kernel configs, max {max(int(r['registers']) for r in builds)} regs, {spills} spill bytes", "0 spills", spills == 0)
    alignment_rows = _csv_rows("alignment_loss")
    memory_target = _json("alignment_loss").get("targets", {}).get("memory_ratio")
    for r in alignment_rows:
        if r["variant"] in ("compiled", "triton"):
            # the benchmark records its targets and verdicts with each row
            recorded = r.get("speed_target") and r.get("speed_target_met") and r.get("memory_target_met")
            target = f"≥{r['speed_target']}× faster, ≥{memory_target:g}× less memory" if recorded and memory_target else ""
            met = r["speed_target_met"] == "True" and r["memory_target_met"] == "True" if recorded else None
            add("alignment_loss", "kernels", f"alignment loss fwd+bwd {r['shape']} {r['variant']} ({r['device']}) vs paper's formulation",
                f"{float(r['speedup_vs_paper']):.2f}× faster, {float(r['memory_ratio_vs_paper']):.2f}× less memory", target, met)
    for r in _csv_rows("dropout_consistency"):
        if r["backend"] != "reference":
            add("dropout_consistency", "kernels", f"{r['op']} fwd+bwd {r['shape']} {r['backend']} ({r['device']}) vs eager", f"{float(r['fwd_bwd_speedup']):.2f}×")
    evaluator = _json("evaluator")
    if evaluator:
        images, seconds = EVALUATOR_TARGET
        add("evaluator", "evaluator", f"{evaluator['num_images']} images end to end (fast path)",
            f"{evaluator['fast_seconds']:.1f} s, {evaluator['fast_images_per_second']:.0f} img/s",
            f"{images:,} in ≤ {seconds} s (≥ {images / seconds:.0f} img/s)",
            evaluator["fast_images_per_second"] * seconds >= images)
        add("evaluator", "evaluator", "fast vs OpenCV reference (images/s; reference extrapolated from a subset)",
            f"{evaluator['speedup']:.1f}×", f"≥ {EVALUATOR_SPEEDUP_TARGET:g}×", evaluator["speedup"] >= EVALUATOR_SPEEDUP_TARGET)
    masks = _json("mask_evaluator")
    for key, what in (("mask_backends", "MaskEvaluator histogram vs np.histogram per image"),
                      ("evaluate_maps_boxes", "evaluate-maps, CUB boxes, vs wsolevaluation's loop"),
                      ("evaluate_maps_masks", "evaluate-maps, OpenImages masks, vs wsolevaluation's loop")):
        if key in masks:
            part = masks[key]
            add("mask_evaluator", "evaluator", f"{what} ({part['images']} images)",
                f"{part['fast_images_per_second']:.0f} vs {part['reference_images_per_second']:.0f} img/s "
                f"= {part['speedup']:.1f}×", "same result", part["equal"])
    data = _json("data")
    for r in data.get("rows", []):
        add("data", "data", f"{r['what']} {r['pipeline']} {r['output']}".replace(" - -", ""), f"{float(r['images_per_s']):.0f} img/s")
    for pipeline, speedup in data.get("dali_speedup_over_torch", {}).items():
        add("data", "data", f"DALI vs torch loader, {pipeline.replace('_', ' ')} (images/s)", f"{speedup:.2f}×",
            f"≥ {DALI_SPEEDUP_TARGET:g}×", speedup >= DALI_SPEEDUP_TARGET)
    for r in _json("train_step").get("rows", []):
        add("train_step", "train step", f"{r['case']} batch {r['batch']}: compiled vs eager",
            f"{r['compiled_img_s']:.1f} vs {r['eager_img_s']:.1f} img/s = {r['speedup']:.2f}×",
            f"≥ {TRAIN_STEP_SPEEDUP_TARGET:g}×", r["speedup"] >= TRAIN_STEP_SPEEDUP_TARGET)
    return rows


def missed_lines(rows: list[dict]) -> list[str]:
    """One line per figure that misses its target: what, the figure, the target."""
    return [f"{MISSED}: {r['measurement']}: {r['value']} (target {r['target']})" for r in rows if r["verdict"] == MISSED]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="smaller sizes and fewer repeats: about 7 min on a 2-core CPU (a full run takes tens)")
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), help="run only these")
    parser.add_argument("--summary-only", action="store_true", help="print the summary of the saved results, run nothing")
    parser.add_argument("--write-summary", action="store_true",
                        help="with --summary-only: also rewrite summary.{json,csv} (of results/, or results/quick/ with --quick)")
    args = parser.parse_args(argv)
    failed = []
    if not args.summary_only:
        env = {**os.environ, QUICK_ENV: "1"} if args.quick else None
        for name in args.only or BENCHMARKS:
            module, full, quick = BENCHMARKS[name]
            command = [sys.executable, "-m", module, *(quick if args.quick else full)]
            print(f"\n=== {name}: {' '.join(command[1:])}", flush=True)
            started = time.perf_counter()
            if subprocess.run(command, env=env, cwd=ROOT, check=False).returncode != 0:
                failed.append(name)
            print(f"=== {name}: {time.perf_counter() - started:.0f} s", flush=True)
    rows = summary_rows(args.quick)
    if not rows:
        print("no benchmark results saved yet", file=sys.stderr)
        return 1
    folder = QUICK_RESULTS if args.quick else RESULTS
    print(f"\nsummary ({'quick results where there are any, else ' if args.quick else ''}full results; "
          f"'run' names where each figure comes from):")
    print(format_table(list(rows[0]), [[str(v) for v in r.values()] for r in rows]))
    missed = missed_lines(rows)
    targets = sum(bool(r["verdict"]) for r in rows)
    print(f"{len(missed)} of {targets} figures with a target miss it" + (":" if missed else ""))
    for line in missed:
        print(f"  {line}")
    if not args.summary_only or args.write_summary:
        write_text_atomic(folder / "summary.json", json.dumps(rows, indent=2) + "\n")
        write_text_atomic(folder / "summary.csv", csv_text(rows))
        print(f"wrote {folder / 'summary.json'} and .csv")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
