"""check-gpu's correctness rows: every op forward and backward against the float64 reference
(``fastwsol.kernel_cases`` holds the bounds), the training path's ``upcast`` and its one op for
the losses on F, fp16, the Philox dropout, NaN. Each function takes ``(settings, shared)`` and
the case, and returns the row's details with ``"ok"``."""

from __future__ import annotations

import torch

from fastwsol import kernel_cases
from fastwsol.check_gpu.runner import Settings
from fastwsol.kernel_cases import CHECKED_DTYPES, LAYOUTS, UPSTREAM
from fastwsol.kernel_shapes import OpShapes

GAMMA, DROP_PROB = 0.8, 0.5  # the dropout's γ and p (cub_vgg16's)
SEEDS = (1234, 4321)  # the Philox check's two seeds


def fg_bg(shapes: OpShapes) -> tuple[float, float]:
    """τ_fg, τ_bg of the configuration the shape comes from (cub_resnet50: 0.4, 0.2; else 0.6, 0.1)."""
    return (0.4, 0.2) if shapes.model == "resnet50" else (0.6, 0.1)


def random_tensor(shape, dtype: torch.dtype, layout: str, device: str, seed: int) -> torch.Tensor:
    generator = torch.Generator(device=device).manual_seed(seed)
    tensor = torch.randn(shape, generator=generator, device=device).to(dtype)
    return tensor.contiguous(memory_format=LAYOUTS[layout]) if len(shape) == 4 else tensor


def _max_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.double() - want.double()).abs().max()) if got.numel() else 0.0


def _relative(got: torch.Tensor, want: torch.Tensor) -> float:
    """max |got − want| / max |want|."""
    return _max_error(got, want) / max(float(want.double().abs().max()), 1e-300) if got.numel() else 0.0


def dtype_label(dtype: str, upcast: bool) -> str:
    """The dtype column of a row: ``bf16-upcast`` is a bf16 F read as fp32 (the training path)."""
    return f"{dtype}-upcast" if upcast else dtype


# ------------------------------------------------------------------------------ alignment loss


def _alignment_run(backend, feature, weight, target, thresholds, fine_grained, upcast):
    from fastwsol import ops

    feature = feature.detach().clone(memory_format=torch.preserve_format).requires_grad_()
    weight = weight.detach().clone().requires_grad_()
    losses = ops.alignment_loss(feature, weight, target, fg_threshold=thresholds[0], bg_threshold=thresholds[1],
                                fine_grained=fine_grained, backend=backend, upcast=upcast)
    (UPSTREAM[0] * losses[0] + UPSTREAM[1] * losses[1]).backward()
    return [loss.detach() for loss in losses], [feature.grad, weight.grad]


def _kernel_regions(feature, weight, target, thresholds, fine_grained, upcast) -> tuple[dict, torch.Tensor]:
    """The kernel's mask regions (B×HW, 1 fg, −1 bg), read from the signs of its per-position loss
    weights, and the positions where the norm masks' sign cannot be read (each image's min and
    max norm: their weights carry extra terms). ``upcast`` is the fp32 kernel on F.float()."""
    from fastwsol.kernels import alignment_loss as kernel

    if upcast:
        feature, weight = feature.float(), weight.float()
    norm, _, norm_coef, sim_coef = kernel.position_maps(feature, weight, target, fg_threshold=thresholds[0],
                                                        bg_threshold=thresholds[1], fine_grained=fine_grained)
    unreadable = torch.zeros_like(norm, dtype=torch.bool)
    rows = torch.arange(norm.shape[0], device=norm.device)
    unreadable[rows, norm.argmin(1)] = True
    unreadable[rows, norm.argmax(1)] = True
    found = {"sim": kernel_cases.regions(sim_coef < 0, sim_coef > 0),
             "norm": kernel_cases.regions(norm_coef < 0, norm_coef > 0)}
    return found, unreadable


def check_alignment(settings: Settings, shared: dict, *, shape: str, shapes: OpShapes, dtype: str, layout: str,
                    upcast: bool = False) -> dict:
    """Random inputs at ``shapes`` in ``dtype`` (``upcast``: a bf16 F read as fp32 with an fp32
    weight, the training path) through :func:`compare_alignment`."""
    device = settings.device
    source_feature = random_tensor(shapes.feature, torch.float32, layout, device, seed=0)
    source_weight = random_tensor((shapes.classes, shapes.channels), torch.float32, layout, device, seed=1)
    generator = torch.Generator(device=device).manual_seed(2)
    target = torch.randint(0, shapes.classes, (shapes.batch,), generator=generator, device=device)
    details = compare_alignment(source_feature.to(CHECKED_DTYPES[dtype]),
                                source_weight if upcast else source_weight.to(CHECKED_DTYPES[dtype]), target,
                                thresholds=fg_bg(shapes), fine_grained=shapes.fine_grained, upcast=upcast,
                                unrounded=(source_feature, source_weight) if dtype != "fp32" else None)
    return {"op": "alignment_loss", "shape": shape, "dtype": dtype_label(dtype, upcast), "layout": layout, **details}


def _reference_with_kernel_masks(feature: torch.Tensor, weight: torch.Tensor, target: torch.Tensor, keywords: dict,
                                 upcast: bool) -> tuple[dict, dict, int]:
    """(the float64 alignment reference, the flips report, the flips away from a threshold). Where
    the kernel's masks differ from the reference's only near a threshold, the reference is drawn
    with the kernel's masks there, so that the losses and gradients can be compared."""
    from fastwsol.kernels import alignment_loss as kernel

    thresholds = (keywords["fg_threshold"], keywords["bg_threshold"])
    want = kernel_cases.alignment_reference(feature, weight, target, **keywords)
    found, unreadable = _kernel_regions(feature, weight, target, thresholds, keywords["fine_grained"], upcast)
    near = kernel_cases.alignment_near_threshold(feature, weight, target, **keywords,
                                                 dot_precision=kernel.CLASS_DOT_PRECISION)
    found["norm"] = torch.where(unreadable, want["regions"]["norm"], found["norm"])
    flips = {k: found[k] != want["regions"][k] for k in ("sim", "norm")}
    unexplained = sum(int((flips[k] & ~near[k]).sum()) for k in flips)
    if any(bool(f.any()) for f in flips.values()):
        given = {k: torch.where(near[k], found[k], want["regions"][k]) for k in flips}
        want = kernel_cases.alignment_reference(feature, weight, target, **keywords, given_regions=given)
    report = {"sim": int(flips["sim"].sum()), "norm": int(flips["norm"].sum()),
              "near_threshold": {k: int(near[k].sum()) for k in ("sim", "norm")},
              "unexplained": unexplained, "expected": near["expected_flips"], "error_bounds": near["bounds"]}
    return want, report, unexplained


DTYPE_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


def _grad_error(got: torch.Tensor, want: torch.Tensor) -> dict:
    """A gradient's relative error against float64 and its bound in ``got``'s dtype."""
    largest = float(want.abs().max()) if want.numel() else 0.0
    return {"error": _relative(got, want), "bound": kernel_cases.grad_bound(DTYPE_NAMES[got.dtype], largest)}


def _verdict(details: dict, unexplained: int) -> dict:
    """``details`` with "ok" (every error within its bound, no flip away from a threshold, and
    every other check true) and, when not, the "reason"."""
    errors = details["errors"]
    checks = [v for k, v in details.items() if isinstance(v, bool)]
    details["ok"] = all(e["error"] <= e["bound"] for e in errors.values()) and unexplained == 0 and all(checks)
    if not details["ok"]:
        details["reason"] = (f"worst: {max(errors, key=lambda k: errors[k]['error'] / errors[k]['bound'])}; "
                             f"{unexplained} mask flips away from a threshold; "
                             f"false: {[k for k, v in details.items() if v is False] or 'none'}")
    return details


def compare_alignment(feature: torch.Tensor, weight: torch.Tensor, target: torch.Tensor, *,
                      thresholds: tuple[float, float], fine_grained: bool, upcast: bool = False,
                      unrounded: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict:
    """The kernels' losses and both gradients against float64 on the same input values, with the
    mask flips allowed near a threshold (kernel_cases), bitwise-repeatable gradients, the layout
    kept. ``unrounded``: the fp32 values ``feature`` and ``weight`` were rounded from, to show
    what the rounding did to the result beside the bounds."""
    keywords = {"fg_threshold": thresholds[0], "bg_threshold": thresholds[1], "fine_grained": fine_grained}
    got = _alignment_run("triton", feature, weight, target, thresholds, fine_grained, upcast)
    again = _alignment_run("triton", feature, weight, target, thresholds, fine_grained, upcast)
    want, flips, unexplained = _reference_with_kernel_masks(feature, weight, target, keywords, upcast)

    loss_dtype = "fp32" if upcast else DTYPE_NAMES[feature.dtype]
    errors = {}
    for index, label in enumerate(("loss_sim", "loss_norm")):
        errors[label] = {"error": _max_error(got[0][index], want["losses"][index]),
                         "bound": kernel_cases.loss_bound(loss_dtype, float(want["losses"][index]))}
    for index, label in enumerate(("grad_feature", "grad_weight")):
        errors[label] = _grad_error(got[1][index], want["grads"][index])
    details = {
        "compared_with": "float64 reference on the same input values",
        "errors": errors,
        "flips": flips,
        "grad_feature_layout_kept": got[1][0].stride() == feature.stride(),
        "grads_bitwise_repeatable": all(torch.equal(g, a) for g, a in zip(got[1], again[1])),
    }
    if unrounded is not None:  # what rounding the fp32 inputs to the kernel's dtype did, beside the bounds
        source = kernel_cases.alignment_reference(*unrounded, target, **keywords)
        details["input_rounding_effect"] = {
            "loss_sim": _max_error(want["losses"][0], source["losses"][0]),
            "loss_norm": _max_error(want["losses"][1], source["losses"][1]),
            "grad_feature": _relative(want["grads"][0], source["grads"][0]),
        }
    return _verdict(details, unexplained)


# --------------------------------------------------------------------- the losses on F as one op

G_DROP = 1.7  # L_drop's upstream gradient in the fused op's check: distinct from UPSTREAM's two


def _feature_losses_run(feature, dropped, weight, target, thresholds, fine_grained):
    from fastwsol import ops

    leaves = [t.detach().clone(memory_format=torch.preserve_format).requires_grad_()
              for t in (feature, dropped, weight)]
    losses = ops.feature_losses(*leaves, target, fg_threshold=thresholds[0], bg_threshold=thresholds[1],
                                fine_grained=fine_grained, backend="triton")
    grads = torch.autograd.grad(G_DROP * losses[0] + UPSTREAM[0] * losses[1] + UPSTREAM[1] * losses[2], leaves)
    return [loss.detach() for loss in losses], list(grads)


def check_feature_losses(settings: Settings, shared: dict, *, shape: str, shapes: OpShapes, dtype: str,
                         layout: str, upcast: bool = False) -> dict:
    """The training objective's one op for L_drop, L_sim and L_norm of ``F.float()`` (fp32 weight;
    ``upcast``: a bf16 F and F_drop, the training path) against float64 on the same input values:
    L_drop within the consistency bound, the alignment losses and the three gradients (∂F the sum
    of both losses' gradients, rounded once) within the alignment bounds, mask flips only near a
    threshold, bitwise-repeatable gradients, the layouts kept."""
    device = settings.device
    tensor_dtype = CHECKED_DTYPES["bf16" if upcast else dtype]
    feature = random_tensor(shapes.feature, torch.float32, layout, device, seed=0).to(tensor_dtype)
    dropped = random_tensor(shapes.feature, torch.float32, layout, device, seed=7).to(tensor_dtype)
    weight = random_tensor((shapes.classes, shapes.channels), torch.float32, layout, device, seed=1)
    generator = torch.Generator(device=device).manual_seed(2)
    target = torch.randint(0, shapes.classes, (shapes.batch,), generator=generator, device=device)
    thresholds = fg_bg(shapes)
    keywords = {"fg_threshold": thresholds[0], "bg_threshold": thresholds[1], "fine_grained": shapes.fine_grained}
    got = _feature_losses_run(feature, dropped, weight, target, thresholds, shapes.fine_grained)
    again = _feature_losses_run(feature, dropped, weight, target, thresholds, shapes.fine_grained)
    want, flips, unexplained = _reference_with_kernel_masks(feature, weight, target, keywords, upcast=True)
    drop_leaves = [t.detach().double().requires_grad_() for t in (feature, dropped)]
    drop_loss = (drop_leaves[0] - drop_leaves[1]).abs().mean()
    drop_grads = torch.autograd.grad(G_DROP * drop_loss, drop_leaves)
    want_drop = float(drop_loss.detach())

    errors = {"loss_drop": {"error": abs(float(got[0][0]) - want_drop) / want_drop,
                            "bound": kernel_cases.consistency_bound("fp32")}}
    for index, label in enumerate(("loss_sim", "loss_norm")):
        errors[label] = {"error": _max_error(got[0][index + 1], want["losses"][index]),
                         "bound": kernel_cases.loss_bound("fp32", float(want["losses"][index]))}
    errors["grad_feature"] = _grad_error(got[1][0], want["grads"][0] + drop_grads[0])
    errors["grad_dropped"] = _grad_error(got[1][1], drop_grads[1])
    errors["grad_weight"] = _grad_error(got[1][2], want["grads"][1])
    details = {
        "op": "feature_losses", "shape": shape, "dtype": dtype_label(dtype, upcast), "layout": layout,
        "compared_with": "float64 consistency and alignment references on the same input values",
        "errors": errors,
        "flips": flips,
        "losses_fp32": all(loss.dtype == torch.float32 for loss in got[0]),
        "grad_layouts_kept": got[1][0].stride() == feature.stride() and got[1][1].stride() == dropped.stride(),
        "grads_bitwise_repeatable": all(torch.equal(g, a) for g, a in zip(got[1], again[1])),
    }
    return _verdict(details, unexplained)


# ----------------------------------------------------------------------------------- dropout


def check_dropout(settings: Settings, shared: dict, *, shape: str, shapes: OpShapes, dtype: str, layout: str) -> dict:
    """With a given uniform draw the kernel must equal the reference exactly (mask, output, gradient)."""
    from fastwsol import ops

    device = settings.device
    x = random_tensor(shapes.dropout_input, CHECKED_DTYPES[dtype], layout, device, seed=3)
    generator = torch.Generator(device=device).manual_seed(4)
    uniform = torch.rand((x.shape[0], 1, *x.shape[2:]), generator=generator, device=device)
    grad_out = random_tensor(shapes.dropout_input, CHECKED_DTYPES[dtype], layout, device, seed=5)
    results = {}
    for backend in ("triton", "reference"):
        leaf = x.detach().clone(memory_format=torch.preserve_format).requires_grad_()
        out, keep = ops.attentive_dropout(leaf, GAMMA, DROP_PROB, uniform=uniform, backend=backend)
        out.backward(grad_out)
        results[backend] = (out.detach(), keep, leaf.grad)
    exact = {label: bool(torch.equal(g, w))
             for label, g, w in zip(("out", "keep", "grad"), results["triton"], results["reference"])}
    dropped = int((results["triton"][1] == 0).sum())
    return {"op": "attentive_dropout", "shape": shape, "dtype": dtype, "layout": layout,
            "compared_with": "eager reference, same uniform draw: equal bit for bit",
            "exact": exact, "dropped_positions": dropped,
            "ok": all(exact.values()) and 0 < dropped < results["triton"][1].numel()}


def check_philox(settings: Settings, shared: dict, *, shape: str, shapes: OpShapes, dtype: str, layout: str) -> dict:
    """The training path's own draw (Philox, seeded from torch's generator): the same seed gives
    the same mask and output bit for bit, another seed another mask; only positions above γ·max
    are dropped, and about p of them (within 5 standard deviations of the binomial)."""
    from fastwsol import ops
    from fastwsol.method import reference

    x = random_tensor(shapes.dropout_input, CHECKED_DTYPES[dtype], layout, settings.device, seed=6)

    def draw(seed):
        torch.manual_seed(seed)
        out, keep = ops.attentive_dropout(x, GAMMA, DROP_PROB, backend="triton")
        return out, keep

    first, repeated, other = draw(SEEDS[0]), draw(SEEDS[0]), draw(SEEDS[1])
    eligible = reference.drop_mask(x, GAMMA, 1.0, torch.zeros_like(first[1], dtype=torch.float32)) == 0
    dropped = first[1] == 0
    candidates = int(eligible.sum())
    count = int((dropped & eligible).sum())
    spread = 5 * (candidates * DROP_PROB * (1 - DROP_PROB)) ** 0.5 + 1
    details = {
        "op": "attentive_dropout (Philox)", "shape": shape, "dtype": dtype, "layout": layout,
        "compared_with": "itself under the same seed (bit for bit); the binomial count of dropped positions",
        "repeatable": bool(torch.equal(first[0], repeated[0]) and torch.equal(first[1], repeated[1])),
        "other_seed_differs": bool(not torch.equal(first[1], other[1])),
        "candidates": candidates, "dropped": count, "expected_dropped": candidates * DROP_PROB,
        "dropped_outside_candidates": int((dropped & ~eligible).sum()),
        "output_is_input_times_keep": bool(torch.equal(first[0], x * first[1])),
    }
    details["ok"] = (details["repeatable"] and (details["other_seed_differs"] or candidates < 20)
                     and details["dropped_outside_candidates"] == 0 and abs(count - candidates * DROP_PROB) <= spread
                     and details["output_is_input_times_keep"])
    return details


# ------------------------------------------------------------------------------ consistency


def check_consistency(settings: Settings, shared: dict, *, shape: str, shapes: OpShapes, dtype: str, layout: str,
                      upcast: bool = False) -> dict:
    """Forward within the bound of the float64 value; gradients equal to the reference's (same
    dtype, same ``upcast``) bit for bit."""
    from fastwsol import ops

    feature = random_tensor(shapes.feature, CHECKED_DTYPES[dtype], layout, settings.device, seed=6)
    dropped = random_tensor(shapes.feature, CHECKED_DTYPES[dtype], "nchw", settings.device, seed=7)
    results = {}
    for backend in ("triton", "reference"):
        leaves = [t.detach().clone(memory_format=torch.preserve_format).requires_grad_() for t in (feature, dropped)]
        loss = ops.consistency_loss(*leaves, backend=backend, upcast=upcast)
        loss.backward(torch.tensor(1.7, dtype=loss.dtype, device=loss.device))
        results[backend] = (loss.detach(), leaves[0].grad, leaves[1].grad)
    want = float((feature.double() - dropped.double()).abs().mean())
    error = abs(float(results["triton"][0]) - want) / want
    bound = kernel_cases.consistency_bound("fp32" if upcast else dtype)
    grads_exact = all(torch.equal(g, w) for g, w in zip(results["triton"][1:], results["reference"][1:]))
    return {"op": "consistency_loss", "shape": shape, "dtype": dtype_label(dtype, upcast), "layout": layout,
            "compared_with": "float64 value; gradients: eager reference bit for bit",
            "errors": {"loss": {"error": error, "bound": bound}}, "grads_exact": grads_exact,
            "ok": error <= bound and grads_exact}


# ------------------------------------------------------------------------------------ others


def check_nan(settings: Settings, shared: dict, *, dtype: str) -> dict:
    """NaN made inside the kernels by GPU arithmetic (inf − inf: NVIDIA's canonical NaN 0x7FFFFFFF)
    must come out NaN, as in the reference."""
    from fastwsol import ops

    feature = random_tensor((2, 8, 4, 4), CHECKED_DTYPES[dtype], "nchw", settings.device, seed=8)
    dropped = random_tensor((2, 8, 4, 4), CHECKED_DTYPES[dtype], "nchw", settings.device, seed=9)
    feature[0, 1, 2, 2] = dropped[0, 1, 2, 2] = float("inf")
    x = feature.clone()
    x[1, :, 1, 1] = float("inf")
    x[1, 0, 1, 1] = float("-inf")  # the channel sum is inf − inf
    uniform = torch.rand((2, 1, 4, 4), device=settings.device)
    _, keep = ops.attentive_dropout(x, GAMMA, DROP_PROB, uniform=uniform, backend="triton")
    _, ref_keep = ops.attentive_dropout(x, GAMMA, DROP_PROB, uniform=uniform, backend="reference")
    loss = ops.consistency_loss(feature, dropped, backend="triton")
    details = {"op": "nan", "dtype": dtype, "compared_with": "eager reference",
               "consistency_loss_is_nan": bool(torch.isnan(loss)),
               "dropout_keep_equal": bool(torch.equal(keep, ref_keep))}
    details["ok"] = details["consistency_loss_is_nan"] and details["dropout_keep_equal"]
    return details


def check_fp16_training_refused(settings: Settings, shared: dict) -> dict:
    """Training takes fp32 or bf16 only: ``train.precision=fp16`` must be refused by name (the ops
    themselves are checked in fp16 by the rows beside this one)."""
    from fastwsol.config import ConfigError, load_config

    try:
        load_config(None, ["train.precision=fp16"])
    except ConfigError as exc:
        message = str(exc)
        return {"op": "train.precision=fp16", "dtype": "fp16", "compared_with": "a refusal naming the key",
                "message": message, "ok": "train.precision" in message}
    return {"op": "train.precision=fp16", "dtype": "fp16", "compared_with": "a refusal naming the key",
            "message": "accepted", "ok": False, "reason": "train.precision=fp16 was accepted"}
