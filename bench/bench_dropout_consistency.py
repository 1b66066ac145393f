"""Attentive dropout and consistency loss at the real shapes: eager reference vs the compiled
reference (CPU) vs the Triton kernels (CUDA, when a GPU is present).

Shapes: the dropout input F' (VGG16 conv4_3: B=64, 512, 28×28; ResNet50 layer4.0: B=32, 2048,
28×28) and the consistency-loss input F (VGG16: B=64, 1024, 14×14; ResNet50: B=32, 2048, 28×28),
fp32. Each row is forward and forward+backward time, median of the repeats after warm-up
(compile time reported apart). On CUDA, timings come from ``triton.testing.do_bench`` and the
Triton rows add achieved GB/s from the bytes the kernels move (kernels' ``OP_BYTES``) and peak
memory.

    python -m bench.bench_dropout_consistency [--repeats 5] [--quick]
    python -m pytest bench/bench_dropout_consistency.py --benchmark-json=bench/results/dropout_consistency_pytest.json

Prints a table and writes ``bench/results/dropout_consistency.{json,csv}`` (``results/quick/`` unless a full run: bench/common.py).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch

from bench.common import save_results
from fastwsol import ops
from fastwsol.kernel_shapes import REAL_SHAPES, TRAFFIC, OpShapes

THRESHOLD, DROP_PROB = 0.8, 0.5  # CUB VGG16 (docs/method.md §6)
# (op, label, shape); "--quick" divides the batch by 8.
CASES = [  # the real shapes (fastwsol.kernel_shapes): the dropout's input, and F
    *(("attentive_dropout", f"{name} dropout input", REAL_SHAPES[name].dropout_input) for name in ("vgg16-cub", "resnet50-cub")),
    *(("consistency_loss", f"{name} F", REAL_SHAPES[name].feature) for name in ("vgg16-cub", "resnet50-cub")),
]


def make_inputs(op: str, shape, device) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator(device=device).manual_seed(0)
    x = torch.rand(shape, device=device, generator=generator).requires_grad_(True)
    if op == "attentive_dropout":
        return (x,)
    return x, torch.rand(shape, device=device, generator=generator).requires_grad_(True)


def make_step(op: str, backend: str, inputs, backward: bool):
    """A closure running the op (and its backward) once."""
    if op == "attentive_dropout":
        (x,) = inputs
        grad = torch.ones_like(x)

        def step():
            out, _ = ops.attentive_dropout(x, THRESHOLD, DROP_PROB, backend=backend)
            if backward:
                out.backward(grad)
    else:
        feature, dropped = inputs

        def step():
            loss = ops.consistency_loss(feature, dropped, backend=backend)
            if backward:
                loss.backward()

    return step


def clear_grads(inputs) -> None:
    for t in inputs:
        t.grad = None


def time_cpu(step, inputs, repeats: int) -> float:
    """Median seconds of ``repeats`` calls (after one warm-up call, which also compiles)."""
    times = []
    for _ in range(repeats):
        clear_grads(inputs)
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_cuda(step, inputs) -> tuple[float, int]:
    """(median seconds by triton.testing.do_bench, peak bytes allocated during one call)."""
    from triton.testing import do_bench

    def run():
        clear_grads(inputs)
        step()

    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    run()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    return do_bench(run, return_mode="median") / 1e3, peak


def op_bytes(op: str, shape, backward: bool) -> tuple[int, int]:
    """(HBM bytes moved, minimum) of forward (+ backward) by the Triton kernels, fp32 (fastwsol.kernel_shapes)."""
    b, d, h, w = shape
    # the traffic model takes a configuration: this shape as F (consistency) or the dropout input
    shapes = OpShapes("", b, d, h, 1, False, d, h)
    directions = ("forward", "backward") if backward else ("forward",)
    traffic = [TRAFFIC[op](shapes, 4, direction) for direction in directions]
    return sum(t.hbm_bytes for t in traffic), sum(t.minimum_bytes for t in traffic)


def run(backends, devices, repeats: int, quick: bool) -> list[dict]:
    rows = []
    for op, label, shape in CASES:
        if quick:
            shape = (max(1, shape[0] // 8), *shape[1:])
        for device in devices:
            for backend in backends[device]:
                inputs = make_inputs(op, shape, device)
                row = {"op": op, "shape": f"{label} {shape}", "device": device, "backend": backend}
                for backward in (False, True):
                    step = make_step(op, backend, inputs, backward)
                    start = time.perf_counter()
                    step()  # warm-up (and the compile, for "compiled")
                    warmup = time.perf_counter() - start
                    key = "fwd_bwd" if backward else "fwd"
                    if device == "cuda":
                        seconds, peak = time_cuda(step, inputs)
                        row[f"{key}_peak_mb"] = round(peak / 1e6, 1)
                        if backend == "triton":
                            moved, minimum = op_bytes(op, shape, backward)
                            row[f"{key}_gbps"] = round(moved / seconds / 1e9, 1)
                            row[f"{key}_bytes_ratio"] = round(moved / minimum, 2)
                    else:
                        seconds = time_cpu(step, inputs, repeats)
                    row[f"{key}_ms"] = round(seconds * 1e3, 2)
                    row[f"{key}_warmup_s"] = round(warmup, 2)
                rows.append(row)
                print(format_row(row), flush=True)
    return rows


def add_speedups(rows: list[dict]) -> None:
    eager = {(r["op"], r["shape"], r["device"]): r for r in rows if r["backend"] == "reference"}
    for r in rows:
        base = eager.get((r["op"], r["shape"], r["device"]))
        if base:
            for key in ("fwd", "fwd_bwd"):
                r[f"{key}_speedup"] = round(base[f"{key}_ms"] / r[f"{key}_ms"], 2)


HEADER = f"{'op':<18} {'shape':<36} {'dev':<4} {'backend':<9} {'fwd ms':>9} {'fwd+bwd ms':>10} {'warmup s':>8}"


def format_row(r: dict) -> str:
    return (f"{r['op']:<18} {r['shape']:<36} {r['device']:<4} {r['backend']:<9} {r['fwd_ms']:>9.2f} "
            f"{r['fwd_bwd_ms']:>10.2f} {r['fwd_warmup_s']:>8.2f}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="batch / 8")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    backends = {"cpu": ["reference", "compiled"], "cuda": ["reference", "compiled", "triton"]}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, devices {devices}")
    print(HEADER + "\n" + "-" * len(HEADER))
    rows = run(backends, devices, args.repeats, args.quick)
    add_speedups(rows)

    print("\nspeed-up over the eager reference (same device):")
    for r in rows:
        if r["backend"] != "reference":
            extra = ""
            if "fwd_bwd_gbps" in r:
                extra = f"  {r['fwd_bwd_gbps']} GB/s fwd+bwd, bytes {r['fwd_bwd_bytes_ratio']}× minimum"
            print(f"  {r['op']:<18} {r['shape']:<36} {r['device']:<4} {r['backend']:<9} "
                  f"fwd {r['fwd_speedup']:.2f}×  fwd+bwd {r['fwd_bwd_speedup']:.2f}×{extra}")

    meta = {"torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.machine(),
            "processor": platform.processor(), "repeats": args.repeats, "quick": args.quick,
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "load_average_1_5_15": os.getloadavg()}  # other processes on the CPU make timings noisy
    fields = sorted({k for r in rows for k in r}, key=lambda k: (k not in ("op", "shape", "device", "backend"), k))
    save_results("dropout_consistency", {"meta": meta, "rows": rows}, rows, fields, parser=parser, args=args)


# pytest-benchmark entry points (CPU, forward + backward, quick shapes).
def _quick_cases():
    return [(op, label, (max(1, shape[0] // 8), *shape[1:])) for op, label, shape in CASES]


try:
    import pytest

    @pytest.mark.parametrize("backend", ["reference", "compiled"])
    @pytest.mark.parametrize("case", _quick_cases(), ids=lambda c: f"{c[0]}-{c[1]}")
    def test_cpu_forward_backward(benchmark, case, backend):
        op, _, shape = case
        inputs = make_inputs(op, shape, "cpu")
        step = make_step(op, backend, inputs, backward=True)
        step()  # compile outside the timing

        def timed():
            clear_grads(inputs)
            step()

        benchmark.pedantic(timed, rounds=5, iterations=1)
except ImportError:  # standalone use needs no pytest
    pass


if __name__ == "__main__":
    main()
