"""``fastwsol check-gpu``: prove the Triton kernels on this machine's GPU and measure them.

On one CUDA GPU, at the paper's shapes (``fastwsol.kernel_shapes.REAL_SHAPES``):

1. correctness — every op (alignment loss, attentive dropout, consistency loss), forward and
   backward, fp32 and bf16, NCHW and channels_last, against the float64 reference (and the eager
   reference in the same dtype, for scale); the alignment loss's mask flips against the float64
   masks; ∂L/∂w bitwise equal across two runs; NaN made by GPU arithmetic (inf − inf) stays NaN;
2. the device-to-device copy bandwidth, measured here: the yardstick of the memory-bound kernels;
3. ``triton.testing.do_bench`` times of each op — Triton, the eager reference, the compiled
   reference — with the bytes the kernels move against the minimum, and achieved GB/s;
4. the training step (VGG16 and ResNet50 at 224², bf16 autocast, channels_last on/off) with the
   ops backends triton / compiled / eager: images/s and peak memory;
5. DALI's mixed (GPU) JPEG decoding on generated images, when DALI is installed.

Sections run in that order within a time budget (``--budget-s``, default 480 s); a row the
budget does not reach says so. ``--dry-run`` runs the same code on the CPU at tiny shapes through
Triton's interpreter (no timings worth reading; it is part of the test suite).
Writes ``report.json`` and ``report.md`` into ``--out``.
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from fastwsol.kernel_cases import (
    ALIGNMENT_TOLERANCES,
    CONSISTENCY_LOSS_RTOL,
    DTYPE_LAYOUT_CASES,
    DTYPES,
    LAYOUTS,
    UPSTREAM,
)
from fastwsol.kernel_shapes import DRY_RUN_SHAPES, REAL_SHAPES, TRAFFIC, OpShapes
from fastwsol.tables import markdown_table

FG, BG = 0.6, 0.1  # the config's τ_fg, τ_bg
GAMMA, DROP_PROB = 0.8, 0.5  # the dropout's γ and p
# Beyond the alignment loss's tolerances (fastwsol.kernel_cases), a bf16 result also passes when
# it is within this many times the error of PyTorch's own eager computation in bf16 (mask flips
# at real shapes are the input rounding's doing).
EAGER_ERROR_FACTOR = 2
TRAIN_BACKENDS = {"triton": ("triton", True), "compiled": ("compiled", True), "eager": ("reference", False)}
DEFAULT_BUDGET_S = 480


@dataclass
class Settings:
    device: str
    dry_run: bool
    quick: bool
    budget_s: float
    shapes: dict[str, OpShapes]
    started: float = field(default_factory=time.monotonic)

    def over_budget(self) -> bool:
        return time.monotonic() - self.started > self.budget_s

    @property
    def few(self) -> bool:
        """Time a subset: --quick, and --dry-run (whose times mean nothing)."""
        return self.quick or self.dry_run

    @property
    def timing_shapes(self) -> dict[str, OpShapes]:
        return dict(list(self.shapes.items())[:1]) if self.few else self.shapes

    @property
    def timing_dtypes(self) -> tuple[str, ...]:
        return ("bf16",) if self.few else tuple(DTYPES)

    @property
    def timing_layouts(self) -> tuple[str, ...]:
        return ("channels_last",) if self.few else tuple(LAYOUTS)


# ------------------------------------------------------------------------------------- timing


def _time_ms(settings: Settings, fn) -> float:
    """Median milliseconds of ``fn``: ``do_bench`` on a GPU, one warm call then one timed on the CPU."""
    if settings.device == "cuda":
        from triton.testing import do_bench

        warmup, rep = (10, 30) if settings.quick else (25, 100)
        return float(do_bench(fn, warmup=warmup, rep=rep, return_mode="median"))
    fn()
    started = time.perf_counter()
    fn()
    return (time.perf_counter() - started) * 1e3


def _synchronize(settings: Settings) -> None:
    if settings.device == "cuda":
        torch.cuda.synchronize()


def copy_bandwidth(settings: Settings) -> dict:
    """Device-to-device copy: 2 × bytes / time (read + write), the memory roof of this run."""
    size = (1 << 20) if settings.dry_run else (1 << 30)
    source = torch.empty(size, dtype=torch.uint8, device=settings.device)
    target = torch.empty_like(source)
    milliseconds = _time_ms(settings, lambda: target.copy_(source))
    return {"bytes": size, "ms": milliseconds, "gb_per_s": 2 * size / milliseconds / 1e6}


# -------------------------------------------------------------------------------- correctness


def _max_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.double() - want.double()).abs().max()) if got.numel() else 0.0


def _relative(error: float, want: torch.Tensor) -> float:
    return error / max(float(want.double().abs().max()), 1e-30)


def _random(shape, dtype, layout, device, seed):
    generator = torch.Generator(device=device).manual_seed(seed)
    tensor = torch.randn(shape, generator=generator, device=device).to(dtype)
    return tensor.contiguous(memory_format=LAYOUTS[layout]) if len(shape) == 4 else tensor


def _alignment_run(backend, feature, weight, target, fine_grained):
    from fastwsol import ops

    feature = feature.detach().clone(memory_format=torch.preserve_format).requires_grad_()
    weight = weight.detach().clone().requires_grad_()
    losses = ops.alignment_loss(feature, weight, target, fg_threshold=FG, bg_threshold=BG,
                                fine_grained=fine_grained, backend=backend)
    (UPSTREAM[0] * losses[0] + UPSTREAM[1] * losses[1]).backward()
    return [loss.detach() for loss in losses], [feature.grad, weight.grad]


def _regions(fg: torch.Tensor, bg: torch.Tensor) -> torch.Tensor:
    """1 = foreground, −1 = background, 0 = neither."""
    return fg.to(torch.int8) - bg.to(torch.int8)


def _alignment_mask_flips(feature, weight, target, fine_grained) -> dict:
    """Positions whose region differs from the float64 reference's. The kernel's regions are read
    from the signs of its per-position loss weights (mask_bg/|bg| − mask_fg/|fg|); for the norm
    masks the per-image min and max positions are left out (their weights carry extra terms)."""
    from fastwsol.kernels import alignment_loss as kernel
    from fastwsol.method import reference

    norm, _, norm_coef, sim_coef = kernel.position_maps(feature, weight, target, fg_threshold=FG, bg_threshold=BG,
                                                        fine_grained=fine_grained)
    with torch.no_grad():
        f64, w64 = feature.double(), weight.double()
        normalized = reference.minmax_normalize(reference.norm_map(f64)).flatten(1)
        source = (reference.max_class_similarity(f64, w64) if fine_grained
                  else reference.target_similarity(f64, w64, target)).flatten(1)
        sim_want = _regions(normalized > FG, normalized < BG)
        sim_got = _regions(sim_coef < 0, sim_coef > 0)
        norm_want = _regions(source > 0, source < 0)
        norm_got = _regions(norm_coef < 0, norm_coef > 0)
        ends = torch.zeros_like(norm_want, dtype=torch.bool)
        rows = torch.arange(norm.shape[0], device=norm.device)
        ends[rows, norm.argmin(1)] = True
        ends[rows, norm.argmax(1)] = True
        return {
            "positions": norm.numel(),
            "sim_mask_flips": int((sim_got != sim_want).sum()),
            "norm_mask_flips": int(((norm_got != norm_want) & ~ends).sum()),
        }


def check_alignment(settings: Settings, name: str, shapes: OpShapes, dtype: str, layout: str) -> dict:
    device, fine = settings.device, shapes.fine_grained
    feature = _random(shapes.feature, DTYPES[dtype], layout, device, seed=0)
    weight = _random((shapes.classes, shapes.channels), DTYPES[dtype], layout, device, seed=1)
    target = torch.randint(0, shapes.classes, (shapes.batch,), generator=torch.Generator(device=device).manual_seed(2),
                           device=device)
    got = _alignment_run("triton", feature, weight, target, fine)
    again = _alignment_run("triton", feature, weight, target, fine)
    want = _alignment_run("reference", feature.double(), weight.double(), target, fine)
    eager = _alignment_run("reference", feature, weight, target, fine)
    row = {"op": "alignment_loss", "shape": name, "dtype": dtype, "layout": layout}
    tolerance = ALIGNMENT_TOLERANCES[dtype]
    passed = True
    for label, kind, index in (("loss_sim", 0, 0), ("loss_norm", 0, 1), ("grad_feature", 1, 0), ("grad_weight", 1, 1)):
        error = _max_error(got[kind][index], want[kind][index])
        eager_error = _max_error(eager[kind][index], want[kind][index])
        if kind == 1:
            error, eager_error = _relative(error, want[kind][index]), _relative(eager_error, want[kind][index])
        bound = tolerance["loss" if kind == 0 else "grad"]
        within_eager = dtype != "fp32" and error <= EAGER_ERROR_FACTOR * eager_error
        ok = math.isfinite(error) and (error <= bound or within_eager)
        row[label] = {"error": error, "eager_error": eager_error, "tolerance": bound, "ok": ok}
        passed &= ok
    row["grad_feature_layout_kept"] = got[1][0].stride() == feature.stride()
    row["weight_grad_bitwise_repeatable"] = all(torch.equal(g, a) for g, a in zip(got[1], again[1]))
    row.update(_alignment_mask_flips(feature, weight, target, fine))
    row["ok"] = passed and row["grad_feature_layout_kept"] and row["weight_grad_bitwise_repeatable"]
    return row


def check_dropout(settings: Settings, name: str, shapes: OpShapes, dtype: str, layout: str) -> dict:
    """With a given uniform draw the kernel must equal the reference exactly (mask, output, gradient)."""
    from fastwsol import ops

    x = _random(shapes.dropout_input, DTYPES[dtype], layout, settings.device, seed=3)
    generator = torch.Generator(device=settings.device).manual_seed(4)
    uniform = torch.rand((x.shape[0], 1, *x.shape[2:]), generator=generator, device=settings.device)
    grad_out = _random(shapes.dropout_input, DTYPES[dtype], layout, settings.device, seed=5)
    results = {}
    for backend in ("triton", "reference"):
        leaf = x.detach().clone(memory_format=torch.preserve_format).requires_grad_()
        out, keep = ops.attentive_dropout(leaf, GAMMA, DROP_PROB, uniform=uniform, backend=backend)
        out.backward(grad_out)
        results[backend] = (out.detach(), keep, leaf.grad)
    labels = ("out", "keep", "grad")
    exact = {label: bool(torch.equal(g, w)) for label, g, w in zip(labels, results["triton"], results["reference"])}
    dropped = int((results["triton"][1] == 0).sum())
    return {"op": "attentive_dropout", "shape": name, "dtype": dtype, "layout": layout, "exact": exact,
            "dropped_positions": dropped, "ok": all(exact.values()) and 0 < dropped < results["triton"][1].numel()}


def check_consistency(settings: Settings, name: str, shapes: OpShapes, dtype: str, layout: str) -> dict:
    """Forward within the tolerance of the float64 value; gradients equal to the reference's in the same dtype."""
    from fastwsol import ops

    feature = _random(shapes.feature, DTYPES[dtype], layout, settings.device, seed=6)
    dropped = _random(shapes.feature, DTYPES[dtype], "nchw", settings.device, seed=7)
    results = {}
    for backend in ("triton", "reference"):
        leaves = [t.detach().clone(memory_format=torch.preserve_format).requires_grad_() for t in (feature, dropped)]
        loss = ops.consistency_loss(*leaves, backend=backend)
        loss.backward(torch.tensor(1.7, dtype=loss.dtype, device=loss.device))
        results[backend] = (loss.detach(), leaves[0].grad, leaves[1].grad)
    want = (feature.double() - dropped.double()).abs().mean()
    error = abs(float(results["triton"][0]) - float(want)) / float(want)
    eager_error = abs(float(results["reference"][0]) - float(want)) / float(want)
    bound = CONSISTENCY_LOSS_RTOL[dtype]
    grads_exact = all(torch.equal(g, w) for g, w in zip(results["triton"][1:], results["reference"][1:]))
    return {"op": "consistency_loss", "shape": name, "dtype": dtype, "layout": layout,
            "loss": {"relative_error": error, "eager_relative_error": eager_error, "tolerance": bound},
            "grads_exact": grads_exact, "ok": error <= bound and grads_exact}


def check_nan(settings: Settings, dtype: str) -> dict:
    """NaN made inside the kernels by GPU arithmetic (inf − inf: NVIDIA's canonical NaN 0x7FFFFFFF)
    must come out NaN, as in the reference."""
    from fastwsol import ops

    feature = _random((2, 8, 4, 4), DTYPES[dtype], "nchw", settings.device, seed=8)
    dropped = _random((2, 8, 4, 4), DTYPES[dtype], "nchw", settings.device, seed=9)
    feature[0, 1, 2, 2] = dropped[0, 1, 2, 2] = float("inf")
    x = feature.clone()
    x[1, :, 1, 1] = float("inf")
    x[1, 0, 1, 1] = float("-inf")  # the channel sum is inf − inf
    uniform = torch.rand((2, 1, 4, 4), device=settings.device)
    _, keep = ops.attentive_dropout(x, GAMMA, DROP_PROB, uniform=uniform, backend="triton")
    _, ref_keep = ops.attentive_dropout(x, GAMMA, DROP_PROB, uniform=uniform, backend="reference")
    loss = ops.consistency_loss(feature, dropped, backend="triton")
    row = {"op": "nan", "dtype": dtype, "consistency_loss_is_nan": bool(torch.isnan(loss)),
           "dropout_keep_equal": bool(torch.equal(keep, ref_keep))}
    row["ok"] = row["consistency_loss_is_nan"] and row["dropout_keep_equal"]
    return row


# ------------------------------------------------------------------------------------ timings


def _op_call(op: str, backend: str, shapes: OpShapes, dtype: str, layout: str, device: str):
    """(forward, forward + backward) closures of one op on fresh random inputs."""
    from fastwsol import ops

    if op == "alignment_loss":
        feature = _random(shapes.feature, DTYPES[dtype], layout, device, 0).requires_grad_()
        weight = _random((shapes.classes, shapes.channels), DTYPES[dtype], layout, device, 1).requires_grad_()
        target = torch.randint(0, shapes.classes, (shapes.batch,), device=device)
        leaves = [feature, weight]

        def forward():
            return ops.alignment_loss(feature, weight, target, fg_threshold=FG, bg_threshold=BG,
                                      fine_grained=shapes.fine_grained, backend=backend)

        def total(outputs):
            return UPSTREAM[0] * outputs[0] + UPSTREAM[1] * outputs[1]
    elif op == "attentive_dropout":
        x = _random(shapes.dropout_input, DTYPES[dtype], layout, device, 3).requires_grad_()
        grad_out = torch.randn_like(x)
        leaves = [x]

        def forward():
            return ops.attentive_dropout(x, GAMMA, DROP_PROB, backend=backend)

        def total(outputs):
            return (outputs[0] * grad_out).sum()
    else:
        leaves = [_random(shapes.feature, DTYPES[dtype], layout, device, s).requires_grad_() for s in (6, 7)]

        def forward():
            return (ops.consistency_loss(*leaves, backend=backend),)

        def total(outputs):
            return outputs[0]

    def forward_backward():
        for leaf in leaves:
            leaf.grad = None
        total(forward()).backward()

    return forward, forward_backward


def time_ops(settings: Settings, copy_gb_per_s: float, backends: tuple[str, ...]) -> list[dict]:
    rows = []
    for name, shapes in settings.timing_shapes.items():
        for dtype in settings.timing_dtypes:
            for layout in settings.timing_layouts:
                for op in TRAFFIC:
                    for backend in backends:
                        row = {"op": op, "shape": name, "dtype": dtype, "layout": layout, "backend": backend}
                        if settings.over_budget():
                            rows.append({**row, "skipped": "time budget"})
                            continue
                        forward, forward_backward = _op_call(op, backend, shapes, dtype, layout, settings.device)
                        row["forward_ms"] = _time_ms(settings, forward)
                        row["forward_backward_ms"] = _time_ms(settings, forward_backward)
                        if backend == "triton":
                            element_size = DTYPES[dtype].itemsize
                            directions = {d: TRAFFIC[op](shapes, element_size, d) for d in ("forward", "backward")}
                            moved = sum(t.hbm_bytes for t in directions.values())
                            minimum = sum(t.minimum_bytes for t in directions.values())
                            row.update(bytes_moved=moved, bytes_minimum=minimum,
                                       gb_per_s=moved / row["forward_backward_ms"] / 1e6)
                            row["fraction_of_copy"] = row["gb_per_s"] / copy_gb_per_s
                            row["floor_ms"] = minimum / copy_gb_per_s / 1e6
                        rows.append(row)
                        _synchronize(settings)
    return rows


# --------------------------------------------------------------------------------- train step


def _train_cases(settings: Settings) -> list[tuple[str, int, int, bool, str]]:
    """(model, image size, batch, channels_last, backend)."""
    if settings.dry_run:  # the interpreter and eager only: Inductor's CPU compile takes minutes
        return [("vgg_small", 32, 2, False, "eager"), ("vgg_small", 32, 2, True, "triton")]
    models = [("vgg16", 224, 32)] if settings.quick else [("vgg16", 224, 32), ("resnet50", 224, 32)]
    layouts = (True,) if settings.quick else (False, True)
    return [(m, size, batch, cl, backend) for m, size, batch in models for cl in layouts for backend in TRAIN_BACKENDS]


def time_train_step(settings: Settings, model_name: str, size: int, batch: int, channels_last: bool,
                    backend: str) -> dict:
    from fastwsol.config import load_config
    from fastwsol.models import create_model
    from fastwsol.train import TrainStep, build_optimizer

    ops_backend, compiled = TRAIN_BACKENDS[backend]
    compiled = compiled and not settings.dry_run
    classes = 200
    config = load_config(None, [f"model.name={model_name}", f"train.compile={compiled}", f"train.backend={ops_backend}",
                                f"train.channels_last={channels_last}", "train.precision=bf16"])
    torch.manual_seed(0)
    model = create_model(model_name, classes).to(settings.device).train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, config)
    step = TrainStep(model, model.fc.weight, config, uint8_input=True)
    images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, device=settings.device)
    labels = torch.randint(0, classes, (batch,), device=settings.device)

    def one_step():
        optimizer.zero_grad(set_to_none=True)
        step(images, labels, full=True)
        optimizer.step()

    started = time.perf_counter()
    one_step()  # compiles, when compiled
    _synchronize(settings)
    first_s = time.perf_counter() - started
    steps = 1 if settings.dry_run else 5 if settings.quick else 10
    one_step()
    if settings.device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    for _ in range(steps):
        one_step()
    _synchronize(settings)
    seconds = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated() if settings.device == "cuda" else None
    return {"model": model_name, "image_size": size, "batch": batch, "channels_last": channels_last, "backend": backend,
            "compiled": compiled, "first_step_s": first_s, "images_per_s": batch * steps / seconds,
            "peak_memory_bytes": peak}


# -------------------------------------------------------------------------------------- DALI


def dali_decode(settings: Settings) -> dict:
    """images/s of DALI's mixed (nvJPEG) decoder + resize to 224² on generated JPEGs."""
    from fastwsol.data.dali_loader import dali_available

    if not dali_available():
        return {"status": "skipped: DALI not installed"}
    if settings.device != "cuda":
        return {"status": "skipped: no GPU (--dry-run)"}
    import numpy as np
    from nvidia.dali import fn, pipeline_def, types
    from PIL import Image

    count, batch = (256, 64) if settings.quick else (1024, 64)
    with tempfile.TemporaryDirectory() as folder:
        rng = np.random.default_rng(0)
        files = []
        for index in range(count):
            path = os.path.join(folder, f"{index}.jpg")
            pixels = rng.integers(0, 256, (375, 500, 3), dtype=np.uint8)
            Image.fromarray(pixels).resize((500, 375)).save(path, quality=90)
            files.append(path)

        @pipeline_def(batch_size=batch, num_threads=4, device_id=torch.cuda.current_device(), prefetch_queue_depth=2)
        def pipeline():
            encoded, _ = fn.readers.file(files=files, labels=list(range(count)), name="Reader")
            images = fn.decoders.image(encoded, device="mixed", output_type=types.RGB)
            return fn.resize(images, size=[224, 224], antialias=True)

        pipe = pipeline()
        pipe.build()
        steps = count // batch
        for _ in range(steps):  # warm-up epoch
            pipe.run()
        started = time.perf_counter()
        for _ in range(2 * steps):
            pipe.run()
        seconds = time.perf_counter() - started
    return {"status": "ran", "images": 2 * steps * batch, "images_per_s": 2 * steps * batch / seconds,
            "jpeg": "500×375 random pixels, quality 90"}


# ------------------------------------------------------------------------------------- report


def _environment(settings: Settings) -> dict:
    import triton

    from fastwsol import __version__

    env = {"fastwsol": __version__, "torch": torch.__version__, "triton": triton.__version__,
           "python": platform.python_version(), "device": settings.device, "dry_run": settings.dry_run,
           "quick": settings.quick, "budget_s": settings.budget_s}
    if settings.device == "cuda":
        env.update(gpu=torch.cuda.get_device_name(), capability=".".join(map(str, torch.cuda.get_device_capability())),
                   cuda=torch.version.cuda)
    return env


def run_checks(settings: Settings, progress=print) -> dict:
    report = {"environment": _environment(settings)}
    rows = []
    for name, shapes in settings.shapes.items():
        for dtype, layout in DTYPE_LAYOUT_CASES:
            for check in (check_alignment, check_dropout, check_consistency):
                rows.append(check(settings, name, shapes, dtype, layout))
                progress(_row_line(rows[-1]))
    for dtype in DTYPES:
        rows.append(check_nan(settings, dtype))
        progress(_row_line(rows[-1]))
    report["correctness"] = rows
    report["copy_bandwidth"] = copy_bandwidth(settings)
    progress(f"copy bandwidth {report['copy_bandwidth']['gb_per_s']:.0f} GB/s")
    eager_backends = ("triton", "reference") if settings.dry_run else ("triton", "reference", "compiled")
    report["timings"] = time_ops(settings, report["copy_bandwidth"]["gb_per_s"], eager_backends)
    train = []
    for case in _train_cases(settings):
        if settings.over_budget():
            train.append({"case": list(case), "skipped": "time budget"})
            continue
        train.append(time_train_step(settings, *case))
        progress(f"train step {case}: {train[-1]['images_per_s']:.1f} img/s")
    report["train_step"] = train
    report["dali"] = dali_decode(settings)
    report["elapsed_s"] = time.monotonic() - settings.started
    report["ok"] = all(row["ok"] for row in rows)
    return report


def _row_line(row: dict) -> str:
    where = " ".join(str(row[k]) for k in ("op", "shape", "dtype", "layout") if k in row)
    return f"{'ok  ' if row['ok'] else 'FAIL'} {where}"


def _format(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def _correctness_table(rows: list[dict]) -> str:
    table = []
    for row in rows:
        details = {k: v for k, v in row.items() if k not in ("op", "shape", "dtype", "layout", "ok")}
        text = "; ".join(f"{k}={_format(v['error']) if isinstance(v, dict) and 'error' in v else _format(v)}"
                         for k, v in details.items())
        table.append((row["op"], row.get("shape", ""), row["dtype"], row.get("layout", ""),
                      "yes" if row["ok"] else "NO", text))
    return markdown_table(("op", "shape", "dtype", "layout", "ok", "details"), table)


def _timings_table(rows: list[dict]) -> str:
    header = ("op", "shape", "dtype", "layout", "backend", "fwd ms", "fwd+bwd ms", "MB moved", "MB min", "GB/s",
              "of copy", "floor ms")
    table = []
    for row in rows:
        case = [row["op"], row["shape"], row["dtype"], row["layout"], row["backend"]]
        if "skipped" in row:
            table.append([*case, f"skipped: {row['skipped']}", *[""] * (len(header) - len(case) - 1)])
            continue
        # the traffic columns are the Triton rows' (the references' traffic is not modelled)
        traffic = [f"{row['bytes_moved'] / 1e6:.1f}", f"{row['bytes_minimum'] / 1e6:.1f}", f"{row['gb_per_s']:.0f}",
                   f"{row['fraction_of_copy']:.0%}", f"{row['floor_ms']:.3f}"] if "bytes_moved" in row else [""] * 5
        table.append([*case, f"{row['forward_ms']:.3f}", f"{row['forward_backward_ms']:.3f}", *traffic])
    return markdown_table(header, table)


def _train_step_table(rows: list[dict]) -> str:
    header = ("model", "size", "batch", "channels_last", "backend", "img/s", "peak GB", "first step s")
    table = []
    for row in rows:
        if "skipped" in row:
            table.append([*row["case"], f"skipped: {row['skipped']}", *[""] * (len(header) - len(row["case"]) - 1)])
            continue
        peak = f"{row['peak_memory_bytes'] / 2**30:.2f}" if row["peak_memory_bytes"] is not None else "-"
        table.append((row["model"], row["image_size"], row["batch"], row["channels_last"], row["backend"],
                      f"{row['images_per_s']:.1f}", peak, f"{row['first_step_s']:.1f}"))
    return markdown_table(header, table)


def format_markdown(report: dict) -> str:
    """``report.md``: the verdict, the environment, then the correctness, timing and training-step
    tables and DALI's line."""
    env, copy, dali = report["environment"], report["copy_bandwidth"], report["dali"]
    dali_line = dali["status"] if dali["status"] != "ran" else (
        f"mixed decode + resize: {dali['images_per_s']:.0f} images/s ({dali['images']} images, {dali['jpeg']})")
    return "\n".join([
        f"# fastwsol check-gpu: {'PASS' if report['ok'] else 'FAIL'}", "",
        ", ".join(f"{k} {v}" for k, v in env.items()), "",
        f"Elapsed {report['elapsed_s']:.0f} s. Tolerances: {json.dumps(ALIGNMENT_TOLERANCES)} "
        f"(losses absolute, gradients relative to the largest reference magnitude; bf16 also passes within "
        f"{EAGER_ERROR_FACTOR}× the eager bf16 reference's own error).", "",
        "## Correctness", "", _correctness_table(report["correctness"]), "",
        f"## Timings (device-to-device copy: {copy['gb_per_s']:.0f} GB/s)", "", _timings_table(report["timings"]), "",
        "## Training step (bf16 autocast)", "", _train_step_table(report["train_step"]), "",
        "## DALI", "", dali_line, "",
    ])


def _prepare_dry_run() -> None:
    """The interpreter must be on before the kernels are defined (Triton decides at import)."""
    kernels_loaded = "fastwsol.kernels.alignment_loss" in sys.modules
    if not kernels_loaded:
        os.environ["TRITON_INTERPRET"] = "1"
        return
    from triton.runtime.interpreter import InterpretedFunction

    from fastwsol.kernels import alignment_loss

    if not isinstance(alignment_loss._position_stats_kernel, InterpretedFunction):
        raise ValueError("--dry-run needs TRITON_INTERPRET=1 before fastwsol's kernels are imported")


def main(out: str, *, quick: bool = False, dry_run: bool = False, force: bool = False,
         budget_s: float = DEFAULT_BUDGET_S) -> int:
    """Run the checks, write ``out/report.json`` and ``out/report.md``; 0 when every correctness row passed."""
    from fastwsol.io import write_text_atomic

    out_dir = Path(out)
    targets = [out_dir / "report.json", out_dir / "report.md"]
    existing = [str(p) for p in targets if p.exists()]
    if existing and not force:
        raise ValueError(f"{', '.join(existing)} already exist; pass --force to overwrite or choose another --out")
    if dry_run:
        _prepare_dry_run()
        settings = Settings("cpu", True, quick, budget_s, DRY_RUN_SHAPES)
    else:
        if not torch.cuda.is_available():
            raise ValueError("check-gpu needs a CUDA GPU (torch.cuda.is_available() is False); "
                             "--dry-run runs the same checks on the CPU through Triton's interpreter")
        settings = Settings("cuda", False, quick, budget_s, REAL_SHAPES)
    report = run_checks(settings)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(targets[0], json.dumps(report, indent=1, default=str))
    write_text_atomic(targets[1], format_markdown(report))
    print(f"{'PASS' if report['ok'] else 'FAIL'}: wrote {targets[0]} and {targets[1]} ({report['elapsed_s']:.0f} s)")
    return 0 if report["ok"] else 1

