"""check-gpu's measurements of the ops: the device-to-device copy (this machine's memory roof),
each op's forward and backward replayed from a CUDA graph against its floor (the least HBM
traffic of ``fastwsol.kernel_shapes`` at the measured copy bandwidth) and the roofline model's
estimate (``bench/results/roofline.json``), and the loss + dropout block against the paper's
formulation run eagerly. On the CPU dry run every time is a plain wall-clock time through
Triton's interpreter, labelled so: the rows and columns exist, the numbers mean nothing."""

from __future__ import annotations

import json
import math
import statistics
import time
from pathlib import Path

import torch

from fastwsol.check_gpu.correctness import DROP_PROB, GAMMA, fg_bg, random_tensor
from fastwsol.check_gpu.runner import Settings
from fastwsol.kernel_build import OP_DIRECTIONS
from fastwsol.kernel_cases import CHECKED_DTYPES, UPSTREAM
from fastwsol.kernel_shapes import UPCAST_DTYPE, OpShapes, op_traffic

ROOFLINE = Path(__file__).resolve().parents[2] / "bench" / "results" / "roofline.json"
L2_FLUSH_BYTES = 256 << 20  # written between timed replays: above any current GPU's L2
CPU_METHOD = "cpu-wall (Triton interpreter, not a GPU time)"
CAPTURE_FAILED = "events (CUDA graph capture failed"


# ------------------------------------------------------------------------------------ timers


def _cpu_times(settings: Settings, fn, reps: int) -> list[float]:
    fn()
    times = []
    for _ in range(reps):
        settings.check_time("in a timing loop")
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1e3)
    return times


def _event_times(settings: Settings, launch, reps: int, flush: torch.Tensor | None) -> list[float]:
    """Milliseconds of each ``launch()`` between CUDA events, L2 flushed before each when given."""
    times = []
    for _ in range(reps):
        settings.check_time("in a timing loop")
        if flush is not None:
            flush.zero_()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        launch()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return times


def _capture(fn) -> torch.cuda.CUDAGraph:
    """``fn`` captured in a CUDA graph, after warm-up calls on a side stream (Triton compiles
    there, autograd's streams settle), as PyTorch's whole-network capture does."""
    previous = torch.cuda.current_stream()
    stream = torch.cuda.Stream()
    stream.wait_stream(previous)
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    previous.wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):
            fn()
    except Exception:
        # A failed capture_end leaves the capture stream current (torch.cuda.graph's exit stops
        # there) and, in torch 2.11, the CUDA generator marked as capturing, so that every later
        # draw outside a graph raises; an empty capture that succeeds clears the mark.
        torch.cuda.set_stream(previous)
        try:
            with torch.cuda.graph(torch.cuda.CUDAGraph()):
                pass
        except Exception:  # noqa: BLE001 - the first failure is the one reported
            pass
        raise
    return graph


def kernel_time(settings: Settings, fn, reps: int = 20) -> dict:
    """Median milliseconds of ``fn``'s kernels: a CUDA graph replay between events with L2 flushed
    (no Python or launch overhead), plain events when capture fails; the CPU's wall clock on the
    dry run. {"ms", "method"}."""
    if not settings.on_gpu:
        return {"ms": statistics.median(_cpu_times(settings, fn, 2)), "method": CPU_METHOD}
    flush = torch.empty(L2_FLUSH_BYTES, dtype=torch.int8, device="cuda")
    try:
        graph = _capture(fn)
    except Exception as exc:  # noqa: BLE001 - a capture failure is reported, the op timed without it
        torch.cuda.synchronize()
        method = f"{CAPTURE_FAILED}: {type(exc).__name__}: {str(exc).splitlines()[0][:120]})"
        return {"ms": statistics.median(_event_times(settings, fn, reps, flush)), "method": method}
    graph.replay()
    times = _event_times(settings, graph.replay, reps, flush)
    del graph
    return {"ms": statistics.median(times), "method": "cuda-graph replay, L2 flushed"}


def call_time(settings: Settings, fn, reps: int = 10) -> dict:
    """Median milliseconds of ``fn`` called as a training step calls it (launches included), and
    the peak memory it allocates beyond what was allocated before (n/a on the CPU)."""
    if not settings.on_gpu:
        return {"ms": statistics.median(_cpu_times(settings, fn, 2)), "method": CPU_METHOD,
                "peak_bytes": None}
    fn()
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    times = _event_times(settings, fn, reps, None)
    return {"ms": statistics.median(times), "method": "events around eager calls", "peak_bytes": peak}


def copy_bandwidth(settings: Settings, shared: dict) -> dict:
    """Device-to-device copy: 2 × bytes / time (read + write), this run's memory roof; the floor
    of every timing row is its least HBM traffic at this rate."""
    size = (1 << 30) if settings.on_gpu else (1 << 20)
    source = torch.empty(size, dtype=torch.uint8, device=settings.device)
    target = torch.empty_like(source)
    if settings.on_gpu:
        target.copy_(source)
        milliseconds = statistics.median(_event_times(settings, lambda: target.copy_(source), 10, None))
        method = "events around a 1 GiB copy"
    else:
        milliseconds = statistics.median(_cpu_times(settings, lambda: target.copy_(source), 3))
        method = "cpu-wall (1 MiB copy)"
    rate = 2 * size / (milliseconds / 1e3)
    shared["copy_bytes_per_s"] = rate
    return {"bytes": size, "ms": milliseconds, "gb_per_s": rate / 1e9, "method": method,
            "compared_with": "the floors of the timing rows (least bytes ÷ this rate)", "ok": rate > 0}


# ------------------------------------------------------------------------------ kernel timing


def _op_closures(op: str, shapes: OpShapes, dtype: str, device: str):
    """(forward, forward + backward) of one op on fresh random inputs, channels_last; ``dtype``
    ``bf16-upcast`` is the training objective's call (a bf16 F read as fp32, fp32 weight), as is
    every call of ``feature_losses`` (the losses on F as one op: fp32 weight)."""
    from fastwsol import ops

    upcast = dtype == UPCAST_DTYPE
    tensor_dtype = CHECKED_DTYPES["bf16" if upcast else dtype]
    layout = "channels_last"
    if op == "feature_losses":
        fg, bg = fg_bg(shapes)
        leaves = [random_tensor(shapes.feature, tensor_dtype, layout, device, s).requires_grad_() for s in (0, 7)]
        leaves.append(random_tensor((shapes.classes, shapes.channels), torch.float32, layout, device, 1)
                      .requires_grad_())
        target = torch.randint(0, shapes.classes, (shapes.batch,), device=device)

        def forward():
            return ops.feature_losses(*leaves, target, fg_threshold=fg, bg_threshold=bg,
                                      fine_grained=shapes.fine_grained, backend="triton")

        def total(outputs):
            return outputs[0] + UPSTREAM[0] * outputs[1] + UPSTREAM[1] * outputs[2]
    elif op == "alignment_loss":
        fg, bg = fg_bg(shapes)
        feature = random_tensor(shapes.feature, tensor_dtype, layout, device, 0).requires_grad_()
        weight_dtype = torch.float32 if upcast else tensor_dtype
        weight = random_tensor((shapes.classes, shapes.channels), weight_dtype, layout, device, 1).requires_grad_()
        target = torch.randint(0, shapes.classes, (shapes.batch,), device=device)
        leaves = [feature, weight]

        def forward():
            return ops.alignment_loss(feature, weight, target, fg_threshold=fg, bg_threshold=bg,
                                      fine_grained=shapes.fine_grained, backend="triton", upcast=upcast)

        def total(outputs):
            return UPSTREAM[0] * outputs[0] + UPSTREAM[1] * outputs[1]
    elif op == "attentive_dropout":
        x = random_tensor(shapes.dropout_input, tensor_dtype, layout, device, 3).requires_grad_()
        grad_out = torch.randn_like(x)
        leaves = [x]

        def forward():
            return ops.attentive_dropout(x, GAMMA, DROP_PROB, backend="triton")

        def total(outputs):
            return (outputs[0] * grad_out).sum()
    else:
        leaves = [random_tensor(shapes.feature, tensor_dtype, layout, device, s).requires_grad_() for s in (6, 7)]

        def forward():
            return (ops.consistency_loss(*leaves, backend="triton", upcast=upcast),)

        def total(outputs):
            return outputs[0]

    def forward_backward():
        return torch.autograd.grad(total(forward()), leaves)

    return forward, forward_backward


def roofline_rows() -> dict[tuple, dict]:
    """bench/results/roofline.json's rows by (op, direction, shape, dtype); empty when the file is
    not there (an installed package without the repository)."""
    if not ROOFLINE.is_file():
        return {}
    rows = json.loads(ROOFLINE.read_text()).get("rows", [])
    return {(r["op"], r["direction"], r["shape"], r["dtype"]): r for r in rows}


def time_kernel(settings: Settings, shared: dict, *, op: str, shape: str, shapes: OpShapes, dtype: str) -> dict:
    """One op, shape and dtype: forward and backward (forward + backward − forward) times beside
    the floor at this machine's copy rate and the roofline model's estimate. A direction without
    launches of its own (``kernel_build.OP_DIRECTIONS``: the forward of ``feature_losses`` is
    the consistency and alignment forwards, timed in their rows) is measured, with no floor."""
    forward, forward_backward = _op_closures(op, shapes, dtype, settings.device)
    forward_time = kernel_time(settings, forward)
    both_time = kernel_time(settings, forward_backward)
    rate = shared.get("copy_bytes_per_s")
    model = roofline_rows()
    directions = {}
    for direction, measured_ms in (("forward", forward_time["ms"]), ("backward", both_time["ms"] - forward_time["ms"])):
        traffic = op_traffic(op, shapes, dtype, direction) if direction in OP_DIRECTIONS[op] else None
        floor_us = traffic.minimum_bytes / rate * 1e6 if rate and traffic else None
        modelled = model.get((op, direction, shape, dtype), {})
        directions[direction] = {
            "measured_us": measured_ms * 1e3, "floor_us": floor_us,
            "measured_over_floor": measured_ms * 1e3 / floor_us if floor_us else None,
            "minimum_bytes": traffic.minimum_bytes if traffic else None,
            "modelled_hbm_bytes": traffic.hbm_bytes if traffic else None,
            "model_estimate_us": modelled.get("estimate_us"), "model_floor_us": modelled.get("floor_us"),
            "model_estimate_over_floor": modelled.get("estimate_over_floor"),
        }
    methods = {forward_time["method"], both_time["method"]}
    result = {"op": op, "shape": shape, "dtype": dtype, "layout": "channels_last",
              "method": " / ".join(sorted(methods)),
              "compared_with": "floor = least HBM bytes (kernel_shapes) ÷ measured copy rate; roofline.json's estimate",
              "directions": directions,
              "ok": all(math.isfinite(d["measured_us"]) for d in directions.values()) and forward_time["ms"] > 0}
    failed = sorted(m for m in methods if m.startswith(CAPTURE_FAILED))
    if failed:  # the op cannot run inside a CUDA graph (a host sync?): a defect, and the times include launches
        result.update(ok=False, reason=f"timed without a CUDA graph: {failed[0]}")
    return result


# ------------------------------------------------------------------------------- loss block


def _block_closure(shapes: OpShapes, variant: str, device: str):
    """Forward + backward of the method's block: attentive dropout on the head's output, L_drop on
    (F, F_drop) and the alignment losses on F, the three by ``ops.feature_losses`` as the training
    objective calls them. Variants: ``paper`` (the eager reference, fp32, the B×C×H×W similarity
    materialised), ``ours-fp32`` (the kernels, fp32), ``ours-bf16-upcast`` (the training path under
    bf16 autocast: bf16 tensors read as fp32, fp32 weight)."""
    from fastwsol import ops

    backend = "reference" if variant == "paper" else "triton"
    upcast = variant == "ours-bf16-upcast"
    dtype = torch.bfloat16 if upcast else torch.float32
    layout = "channels_last"
    fg, bg = fg_bg(shapes)
    x = random_tensor(shapes.dropout_input, dtype, layout, device, 3).requires_grad_()
    feature = random_tensor(shapes.feature, dtype, layout, device, 0).requires_grad_()
    dropped = random_tensor(shapes.feature, dtype, layout, device, 7).requires_grad_()
    weight = random_tensor((shapes.classes, shapes.channels), torch.float32, layout, device, 1).requires_grad_()
    target = torch.randint(0, shapes.classes, (shapes.batch,), device=device)
    grad_out = torch.randn_like(x)
    leaves = [x, feature, dropped, weight]

    def block():
        out, _ = ops.attentive_dropout(x, GAMMA, DROP_PROB, backend=backend)
        loss_drop, loss_sim, loss_norm = ops.feature_losses(feature, dropped, weight, target, fg_threshold=fg,
                                                            bg_threshold=bg, fine_grained=shapes.fine_grained,
                                                            backend=backend)
        total = loss_drop + loss_sim + loss_norm
        return torch.autograd.grad((total, out), leaves, (torch.ones_like(total), grad_out))

    return block


BLOCK_VARIANTS = ("paper", "ours-fp32", "ours-bf16-upcast")


def time_loss_block(settings: Settings, shared: dict, *, shape: str, shapes: OpShapes) -> dict:
    """The block's forward + backward, ours against the paper's formulation (eager, materialised),
    each called as a training step calls it: time and peak memory, and the speed-ups."""
    variants = {}
    for variant in BLOCK_VARIANTS:
        measured = call_time(settings, _block_closure(shapes, variant, settings.device))
        variants[variant] = measured
        if settings.on_gpu:
            torch.cuda.empty_cache()
    paper = variants["paper"]["ms"]
    return {"shape": shape, "layout": "channels_last",
            "compared_with": "the paper's formulation: eager fp32 reference, similarity materialised",
            "variants": variants, "speedup_fp32": paper / variants["ours-fp32"]["ms"],
            "speedup_training_path": paper / variants["ours-bf16-upcast"]["ms"],
            "ok": all(v["ms"] > 0 for v in variants.values())}
