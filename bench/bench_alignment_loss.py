"""Alignment loss (L_sim, L_norm) forward + backward: time and peak memory per formulation.

Variants, on the real runs' shapes (fp32):
  paper     — the formulation of the paper's code: normalise weight and feature, the all-class
              similarity B×C×H×W by one einsum *with its autograd graph*, the target class indexed
              from it and the class max taken from the same tensor (eager);
  reference — ``fastwsol.method.reference.alignment_loss`` (eager; class max under no_grad);
  compiled  — the ``"compiled"`` backend: ``torch.compile`` of the reference;
  triton    — the fused kernels (``fastwsol.kernels.alignment_loss``), CUDA only.

    python -m bench.bench_alignment_loss [--repeats 5] [--shapes vgg16-cub ...] [--variants ...]
    python -m pytest bench/bench_alignment_loss.py --benchmark-json=bench/results/alignment_loss_pytest.json

Each (shape, variant) runs in a fresh subprocess: warm-up steps (the compile happens there),
then the timed steps (median, min reported), then one more step for memory. CPU peak memory is
the process's resident-set high-water mark (``VmHWM``, reset through ``/proc/self/clear_refs``
after warm-up) minus the resident set just before the step, i.e. what one forward + backward
adds on top of its inputs (glibc is told to serve allocations ≥ 64 KiB by mmap, so freed memory
leaves the RSS and does not hide later peaks). On CUDA: ``torch.cuda.max_memory_allocated``
above the allocation before the step, timings by ``triton.testing.do_bench``, and for the
Triton variant the achieved bandwidth against the minimum traffic (one read of F forward;
one read of F and one write of dF backward) and the device's peak.

Prints a table, writes ``bench/results/alignment_loss.{json,csv}`` (``results/quick/`` unless a full run: bench/common.py).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from bench.common import ROOT, format_table
from fastwsol.kernel_shapes import REAL_SHAPES, alignment_traffic

FG_THRESHOLD, BG_THRESHOLD = 0.6, 0.2
EPS = 1e-15

# name: (B, D, H, W, C, fine_grained), from the one table of real shapes
SHAPES = {name: (*s.feature, s.classes, s.fine_grained) for name, s in REAL_SHAPES.items()}
VARIANTS = ("paper", "reference", "compiled", "triton")
TARGETS = {"speedup_fine": 3.0, "speedup_target_only": 8.0, "memory_ratio": 3.0}
# Peak DRAM bandwidth (GB/s) by device-name substring, for the achieved-bandwidth column.
PEAK_BANDWIDTH_GBPS = {"H100 SXM": 3350, "H100 PCIe": 2000, "H100": 3350, "A100-SXM4-80GB": 2039, "A100": 1555}


def paper_alignment_loss(feature, fc_weight, target, *, fg_threshold, bg_threshold, fine_grained):
    """The paper code's formulation: every class's similarity map materialised with its graph."""
    batch = feature.shape[0]
    norm = torch.norm(feature, dim=1).view(batch, -1)
    shifted = norm - norm.min(dim=1, keepdim=True)[0]
    norm_hat = shifted / (shifted.max(dim=1, keepdim=True)[0] + EPS)
    similarity_all = torch.einsum("bdhw,cd->bchw", F.normalize(feature, dim=1), F.normalize(fc_weight, dim=1))
    similarity = similarity_all[torch.arange(batch), target].view(batch, -1)
    fg_sim = (norm_hat > fg_threshold).float().detach()
    bg_sim = (norm_hat < bg_threshold).float().detach()
    loss_sim = (bg_sim * similarity).sum(1) / (bg_sim.sum(1) + EPS) - (fg_sim * similarity).sum(1) / (fg_sim.sum(1) + EPS)
    mask_source = similarity_all.max(dim=1)[0].view(batch, -1) if fine_grained else similarity
    fg_norm = (mask_source > 0).float().detach()
    bg_norm = (mask_source < 0).float().detach()
    loss_norm = (bg_norm * norm_hat).sum(1) / (bg_norm.sum(1) + EPS) - (fg_norm * norm_hat).sum(1) / (fg_norm.sum(1) + EPS)
    return loss_sim.mean(), loss_norm.mean()


def variant_function(variant: str):
    if variant == "paper":
        return paper_alignment_loss
    if variant == "reference":
        from fastwsol.method import reference

        return reference.alignment_loss
    if variant == "compiled":
        from fastwsol.method.compiled import compiled

        return compiled("alignment_loss")
    if variant == "triton":
        from fastwsol.kernels.alignment_loss import alignment_loss

        return alignment_loss
    raise ValueError(f"unknown variant {variant!r}; choose from {VARIANTS}")


def _proc_status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _reset_peak_rss() -> None:
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")  # resets VmHWM to the current RSS (Linux ≥ 4.0)


def measure(shape_name: str, variant: str, repeats: int, warmup: int, device: str) -> dict:
    """Time and peak memory of forward + backward for one (shape, variant), in this process."""
    batch, channels, height, width, classes, fine_grained = SHAPES[shape_name]
    generator = torch.Generator().manual_seed(0)
    feature = torch.randn(batch, channels, height, width, generator=generator).to(device).requires_grad_()
    weight = torch.randn(classes, channels, generator=generator).to(device).requires_grad_()
    target = torch.randint(0, classes, (batch,), generator=generator).to(device)
    function = variant_function(variant)

    def step():
        feature.grad = weight.grad = None
        loss_sim, loss_norm = function(feature, weight, target, fg_threshold=FG_THRESHOLD,
                                       bg_threshold=BG_THRESHOLD, fine_grained=fine_grained)
        (loss_sim + loss_norm).backward()
        return loss_sim, loss_norm

    started = time.perf_counter()
    loss_sim, loss_norm = step()
    first_step = time.perf_counter() - started
    for _ in range(warmup):
        step()
    record = {"shape": shape_name, "variant": variant, "device": device, "first_step_s": first_step,
              "loss_sim": float(loss_sim), "loss_norm": float(loss_norm)}
    if device == "cuda":
        import triton.testing

        torch.cuda.synchronize()
        milliseconds = triton.testing.do_bench(step, warmup=25, rep=max(100, 20 * repeats), return_mode="median")
        record.update(median_s=milliseconds / 1e3, min_s=None)
        feature.grad = weight.grad = None
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        step()
        torch.cuda.synchronize()
        record["peak_bytes"] = torch.cuda.max_memory_allocated() - before
        record["memory_measure"] = "torch.cuda.max_memory_allocated above the step's start"
    else:
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            step()
            times.append(time.perf_counter() - started)
        record.update(median_s=statistics.median(times), min_s=min(times))
        feature.grad = weight.grad = None
        baseline = _proc_status_kib("VmRSS")
        _reset_peak_rss()
        step()
        record["peak_bytes"] = (_proc_status_kib("VmHWM") - baseline) * 1024
        record["memory_measure"] = "process RSS high-water mark (VmHWM) above the RSS at the step's start"
    record["repeats"] = repeats
    return record


def _triton_traffic(shape_name: str, element_size: int) -> tuple[int, int]:
    """(HBM bytes the kernels move, minimum bytes) for one forward + backward (fastwsol.kernel_shapes)."""
    directions = [alignment_traffic(REAL_SHAPES[shape_name], element_size, d) for d in ("forward", "backward")]
    return sum(t.hbm_bytes for t in directions), sum(t.minimum_bytes for t in directions)


def run_subprocess(shape_name: str, variant: str, repeats: int, warmup: int, device: str, timeout: float) -> dict:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0", "TRITON_INTERPRET": "0"}
    command = [sys.executable, "-m", "bench.bench_alignment_loss", "--worker", shape_name, variant,
               "--repeats", str(repeats), "--warmup", str(warmup), "--device", device]
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{shape_name}/{variant} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def summarise(records: list[dict]) -> list[dict]:
    """Ratios of the paper formulation to each variant, per shape, with the targets' verdicts."""
    by_key = {(r["shape"], r["variant"]): r for r in records}
    rows = []
    for r in records:
        paper = by_key.get((r["shape"], "paper"))
        fine_grained = SHAPES[r["shape"]][5]
        row = {
            "shape": r["shape"], "variant": r["variant"], "device": r["device"],
            "fine_grained": fine_grained,
            "median_ms": round(r["median_s"] * 1e3, 2),
            "min_ms": None if r["min_s"] is None else round(r["min_s"] * 1e3, 2),
            "peak_mib": round(r["peak_bytes"] / 2**20, 1),
            "first_step_s": round(r["first_step_s"], 2),
            "speedup_vs_paper": round(paper["median_s"] / r["median_s"], 2) if paper else None,
            "memory_ratio_vs_paper": round(paper["peak_bytes"] / max(r["peak_bytes"], 1), 2) if paper else None,
            "loss_sim": r["loss_sim"], "loss_norm": r["loss_norm"],
        }
        if paper and r["variant"] in ("compiled", "triton"):
            speed_target = TARGETS["speedup_fine"] if fine_grained else TARGETS["speedup_target_only"]
            row["speed_target"] = speed_target
            row["speed_target_met"] = row["speedup_vs_paper"] >= speed_target
            row["memory_target_met"] = row["memory_ratio_vs_paper"] >= TARGETS["memory_ratio"]
        for key in ("achieved_gbps", "peak_gbps", "bytes_moved", "bytes_minimum"):
            if key in r:
                row[key] = r[key]
        rows.append(row)
    return rows


def format_rows(rows: list[dict]) -> str:
    header = ("shape", "variant", "median ms", "min ms", "peak MiB", "× faster", "× less mem", "target", "first step s")
    cells, traffic = [], []
    for row in rows:
        verdict = ""
        if "speed_target_met" in row:
            verdict = ("ok" if row["speed_target_met"] else "MISS") + "/" + ("ok" if row["memory_target_met"] else "MISS")
        cells.append((row["shape"], row["variant"], f"{row['median_ms']:.1f}",
                      "" if row["min_ms"] is None else f"{row['min_ms']:.1f}", f"{row['peak_mib']:.1f}",
                      f"{row['speedup_vs_paper'] or 0:.2f}×", f"{row['memory_ratio_vs_paper'] or 0:.2f}×", verdict,
                      f"{row['first_step_s']:.2f}"))
        if "achieved_gbps" in row:
            traffic.append(f"{row['shape']} triton: {row['achieved_gbps']:.0f} GB/s achieved on the minimum traffic"
                           f" (peak {row['peak_gbps'] or 'n/a'} GB/s); moves {row['bytes_moved'] / 1e6:.1f} MB"
                           f" vs minimum {row['bytes_minimum'] / 1e6:.1f} MB")
    target = "target (speed/memory): compiled ≥ 3× faster than paper fine-grained, ≥ 8× target-only; ≥ 3× less peak memory"
    return "\n".join([format_table(header, cells), *traffic, target])


def write_results(rows: list[dict], meta: dict, parser, args) -> None:
    from bench.common import save_results

    fields = sorted({key for row in rows for key in row}, key=lambda k: list(rows[0]).index(k) if k in rows[0] else 99)
    save_results("alignment_loss", {**meta, "rows": rows}, rows, fields, parser=parser, args=args,
                 ignore=("timeout", "peak_gbps"))


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", nargs=2, metavar=("SHAPE", "VARIANT"), help=argparse.SUPPRESS)
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--variants", nargs="+", default=None, choices=VARIANTS,
                        help="default: paper reference compiled (+ triton on CUDA)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=("cpu", "cuda"))
    parser.add_argument("--peak-gbps", type=float, default=None, help="device peak DRAM bandwidth (default: by name)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per (shape, variant) subprocess")
    args = parser.parse_args(argv)

    if args.worker:
        print(json.dumps(measure(*args.worker, repeats=args.repeats, warmup=args.warmup, device=args.device)))
        return []

    variants = args.variants or [v for v in VARIANTS if v != "triton" or args.device == "cuda"]
    if "triton" in variants and args.device != "cuda":
        parser.error("the triton variant needs --device cuda (on CPU it would time Triton's interpreter)")
    peak_gbps = args.peak_gbps
    if args.device == "cuda" and peak_gbps is None:
        name = torch.cuda.get_device_name()
        peak_gbps = next((value for key, value in PEAK_BANDWIDTH_GBPS.items() if key in name), None)
    records = []
    for shape_name in args.shapes:
        for variant in variants:
            record = run_subprocess(shape_name, variant, args.repeats, args.warmup, args.device, args.timeout)
            if variant == "triton":
                moved, minimum = _triton_traffic(shape_name, element_size=4)
                record.update(bytes_moved=moved, bytes_minimum=minimum, peak_gbps=peak_gbps,
                              achieved_gbps=round(minimum / record["median_s"] / 1e9, 1))
            records.append(record)
            print(f"  {shape_name}/{variant}: {record['median_s'] * 1e3:.1f} ms, {record['peak_bytes'] / 2**20:.1f} MiB", flush=True)
    rows = summarise(records)
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or platform.machine()
    print(f"alignment loss forward+backward, {args.device} ({device_name}), {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, fp32, median of {args.repeats}")
    print(format_rows(rows))
    memory_measure = records[0]["memory_measure"] if records else ""
    write_results(rows, {"device": args.device, "device_name": device_name, "threads": torch.get_num_threads(),
                         "torch": torch.__version__, "repeats": args.repeats, "memory_measure": memory_measure,
                         "shapes": {k: dict(zip(("B", "D", "H", "W", "C", "fine_grained"), v)) for k, v in SHAPES.items()},
                         "targets": TARGETS}, parser, args)
    return rows


# pytest-benchmark entry (CPU timing of the same step, in-process; memory is the script's job).
try:
    import pytest
except ImportError:  # the script runs without pytest
    pytest = None

if pytest is not None:

    @pytest.mark.parametrize("variant", ["paper", "reference", "compiled"])
    @pytest.mark.parametrize("shape_name", list(SHAPES))
    def test_alignment_loss_forward_backward(benchmark, shape_name, variant):
        batch, channels, height, width, classes, fine_grained = SHAPES[shape_name]
        generator = torch.Generator().manual_seed(0)
        feature = torch.randn(batch, channels, height, width, generator=generator).requires_grad_()
        weight = torch.randn(classes, channels, generator=generator).requires_grad_()
        target = torch.randint(0, classes, (batch,), generator=generator)
        function = variant_function(variant)

        def step():
            feature.grad = weight.grad = None
            loss_sim, loss_norm = function(feature, weight, target, fg_threshold=FG_THRESHOLD,
                                           bg_threshold=BG_THRESHOLD, fine_grained=fine_grained)
            (loss_sim + loss_norm).backward()

        step()  # compile / warm up outside the timing
        benchmark.pedantic(step, rounds=3, iterations=1)


if __name__ == "__main__":
    main()
