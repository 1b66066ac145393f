"""The dtypes and memory layouts the Triton kernels are checked in, and the tolerances they are
held to against the reference (``fastwsol.method.reference``): one table for the kernel tests
(``tests/kernels/``) and ``fastwsol check-gpu``. The shapes are ``fastwsol.kernel_shapes``'s.

Attentive dropout is held to equality (mask, output and gradient, given the same uniform draw),
as are the consistency loss's gradients (g/N rounded as torch's mean backward, times a sign):
they have no tolerance.

Beyond the fixed tables, the bounds ``check-gpu`` derives from the inputs:

- a result returned in a 16-bit dtype is compared with the float64 reference of the very values
  the kernel read (a bf16 input is exact in float64) and may differ by the fp32 arithmetic bound
  plus the rounding of the result to its dtype (:func:`loss_bound`, :func:`grad_bound`);
- a mask position whose float64 value lies within the fp32 error bound of its threshold may
  flip (:func:`alignment_near_threshold`); a flip anywhere else is a failure, and the losses and
  gradients are then compared with the float64 reference drawn with the kernel's masks at the
  near-threshold positions (:func:`alignment_reference`).
"""

from __future__ import annotations

import math

import torch

from fastwsol.method import reference

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
LAYOUTS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}
# (dtype, layout) names: every op is checked in each
DTYPE_LAYOUT_CASES = tuple((dtype, layout) for dtype in DTYPES for layout in LAYOUTS)
# fp16 runs through the same kernels and is checked by check-gpu at one shape; training refuses
# it (train.precision is fp32 or bf16)
CHECKED_DTYPES = {**DTYPES, "fp16": torch.float16}

# Upstream gradients of (L_sim, L_norm) in the alignment loss's checks: distinct, so that an
# exchange of the two backward paths shows
UPSTREAM = (0.7, 1.3)

# The alignment loss (L_sim, L_norm and both gradients) against the float64 reference on the same
# input values. "loss": absolute; "grad": relative to the reference gradient's largest magnitude.
ALIGNMENT_TOLERANCES = {
    # fp32 arithmetic throughout (the class max's sign, its only use, as an fp32 dot's: one bf16
    # pass, rechecked in tf32x3 where within its error bound): summation order and fp32 rounding
    "fp32": {"loss": 1e-5, "grad": 1e-4},
    # still fp32 inside, but losses and gradients come back in bf16 (7 mantissa bits); a 16-bit
    # input is held to these bounds too
    "bf16": {"loss": 1e-3, "grad": 2e-2},
}

# The consistency loss's value, relative to the reference's.
CONSISTENCY_LOSS_RTOL = {
    "fp32": 1e-5,  # only the summation order differs
    "bf16": 8e-3,  # the fp32 sum is rounded once to bf16, like torch's, but summed in another order: one bf16 step
}

# Unit roundoff (half an ulp at 1, relative) of each result dtype: rounding an exact value to it
# moves the value by at most this times its magnitude, or by half the smallest subnormal below the
# normal range (fp16 gradients at the real shapes, ≈ 1e-6, are subnormal: spacing 2⁻²⁴ ≈ 6e-8).
UNIT_ROUNDOFF = {"fp32": 2.0**-24, "bf16": 2.0**-8, "fp16": 2.0**-11}
SMALLEST_SUBNORMAL = {"fp32": 2.0**-149, "bf16": 2.0**-133, "fp16": 2.0**-24}
# Relative error of one product of the fine-grained class dot ⟨ŵ_c, F_u⟩, by the kernel's dot
# precision: "tf32" rounds ŵ to 10 mantissa bits (a 16-bit F is exact in TF32), "tf32x3" splits
# each operand into two TF32 parts and drops the small × small product and the split's rounding
# (≈ 3·2⁻²², bounded by 2⁻²⁰), "ieee" is an fp32 product.
CLASS_DOT_PRODUCT_ERROR = {"tf32": 2.0**-10, "tf32x3": 2.0**-20, "ieee": 2.0**-24}

# The compiled bf16 training step's gradients and loss terms against the eager fp32 step: within
# this many times the error of the same step run eagerly in bf16 autocast (a whole network's
# rounding has no closed-form bound), plus this relative floor.
TRAIN_STEP_ERROR_FACTOR = 3.0
TRAIN_STEP_ERROR_FLOOR = 1e-2


def rounding(result_dtype: str, magnitude: float) -> float:
    """The most that rounding a value of this magnitude to ``result_dtype`` moves it."""
    return max(UNIT_ROUNDOFF[result_dtype] * abs(magnitude), SMALLEST_SUBNORMAL[result_dtype] / 2)


def loss_bound(result_dtype: str, reference_value: float) -> float:
    """|kernel − float64| allowed for an alignment loss returned in ``result_dtype``: the fp32
    arithmetic bound plus the rounding of the result to ``result_dtype``."""
    return ALIGNMENT_TOLERANCES["fp32"]["loss"] + rounding(result_dtype, reference_value)


def grad_bound(result_dtype: str, reference_max: float) -> float:
    """max |kernel − float64| / max |float64| allowed for a gradient returned in ``result_dtype``
    whose largest float64 element is ``reference_max``: every element is rounded once, by at most
    u·|element| ≤ u·max, or half a subnormal step."""
    return ALIGNMENT_TOLERANCES["fp32"]["grad"] + rounding(result_dtype, reference_max) / max(reference_max, 1e-300)


def consistency_bound(result_dtype: str) -> float:
    """|kernel − float64| / |float64| allowed for L_drop returned in ``result_dtype``."""
    return CONSISTENCY_LOSS_RTOL["fp32"] + UNIT_ROUNDOFF[result_dtype]


def regions(foreground: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
    """1 = foreground, −1 = background, 0 = neither (int8)."""
    return foreground.to(torch.int8) - background.to(torch.int8)


def _alignment_values(feature: torch.Tensor, fc_weight: torch.Tensor, target: torch.Tensor, fine_grained: bool):
    """(norm n, F̂, S, S* or S) flattened to B×HW, from float64 leaves."""
    norm = reference.norm_map(feature)
    normalized = reference.minmax_normalize(norm)
    similarity = reference.target_similarity(feature, fc_weight, target)
    source = reference.max_class_similarity(feature, fc_weight) if fine_grained else similarity.detach()
    return norm.flatten(1), normalized, similarity, source.flatten(1)


def alignment_reference(feature, fc_weight, target, *, fg_threshold: float, bg_threshold: float, fine_grained: bool,
                        given_regions: dict[str, torch.Tensor] | None = None) -> dict:
    """The float64 alignment loss of ``feature`` and ``fc_weight`` (any dtype: upcast exactly),
    backward with :data:`UPSTREAM`: {"losses": (L_sim, L_norm), "grads": (∂F, ∂w), "regions":
    {"sim", "norm"}: the reference's own B×HW regions}. ``given_regions`` replaces the masks
    (same keys and shapes) in the losses and gradients."""
    leaves = [t.detach().double().requires_grad_() for t in (feature, fc_weight)]
    _, normalized, similarity, source = _alignment_values(*leaves, target, fine_grained)
    with torch.no_grad():
        own = {"sim": regions(normalized.flatten(1) > fg_threshold, normalized.flatten(1) < bg_threshold),
               "norm": regions(source > 0, source < 0)}
    used = own if given_regions is None else given_regions
    shape = normalized.shape
    masks = [(used[name] == sign).view(shape) for name in ("sim", "norm") for sign in (1, -1)]
    losses = reference.alignment_loss_from_masks(normalized, similarity, *masks)
    (UPSTREAM[0] * losses[0] + UPSTREAM[1] * losses[1]).backward()
    return {"losses": tuple(loss.detach() for loss in losses), "grads": tuple(leaf.grad for leaf in leaves),
            "regions": own}


def alignment_near_threshold(feature, fc_weight, target, *, fg_threshold: float, bg_threshold: float,
                             fine_grained: bool, dot_precision: str) -> dict:
    """The mask positions an fp32 computation may put on the other side of a threshold, from the
    float64 values of the inputs: {"sim", "norm"} (B×HW booleans), "expected_flips" (an
    estimate) and "bounds" (the largest error bound of each mask, for the report).

    The kernels compute in fp32 whatever the input dtype. Worst-case rounding analysis, with
    u = 2⁻²⁴ and D channels: the norm n = √Σf² has relative error r ≤ (D + 4)·u; F̂ = (n − m)/Δ
    then errs by at most [r(n + m) + u(n − m) + F̂(r(n_max + m) + uΔ)]/Δ + u·F̂, and τ itself is
    rounded to fp32 (u·τ). The sign of S* = max_c⟨ŵ_c, F⟩/‖F‖ can change only where
    |S*| ≤ 2(D + 3)·u + e, e the relative error of one product at ``dot_precision``
    (:data:`CLASS_DOT_PRODUCT_ERROR`; the target-only S is an fp32 dot, e = u). The expected
    number of flips takes the typical error instead (√D in place of D) and counts a position at
    distance d from its threshold under error e as flipping with probability max(0, 1 − d/e)/2."""
    with torch.no_grad():
        f64, w64 = feature.double(), fc_weight.double()
        norm, normalized, _, source = _alignment_values(f64, w64, target, fine_grained)
        normalized = normalized.flatten(1)
        channels = feature.shape[1]
        u = UNIT_ROUNDOFF["fp32"]
        low, high = norm.min(1, keepdim=True).values, norm.max(1, keepdim=True).values
        spread = (high - low).clamp_min(torch.finfo(torch.float64).tiny)
        product = CLASS_DOT_PRODUCT_ERROR[dot_precision] if fine_grained else u
        distance_sim = torch.minimum((normalized - fg_threshold).abs(), (normalized - bg_threshold).abs())
        threshold_rounding = u * max(fg_threshold, bg_threshold)
        near, expected, bounds = {}, 0.0, {}
        for label, length in (("bound", channels), ("typical", math.sqrt(channels))):
            r = (length + 4) * u
            error_sim = ((r * (norm + low) + u * (norm - low) + normalized * (r * (high + low) + u * spread)) / spread
                         + u * normalized + threshold_rounding)
            error_norm = 2 * (length + 3) * u + product
            if label == "bound":
                near = {"sim": distance_sim <= error_sim, "norm": source.abs() <= error_norm}
                bounds = {"sim": float(error_sim.max()) if error_sim.numel() else 0.0, "norm": error_norm}
            else:
                expected = float(((1 - distance_sim / error_sim).clamp_min(0) / 2).sum()
                                 + ((1 - source.abs() / error_norm).clamp_min(0) / 2).sum())
    return {**near, "expected_flips": expected, "bounds": bounds}


def relative_difference(got: torch.Tensor, want: torch.Tensor) -> float:
    """‖got − want‖ / ‖want‖ in float64 (the absolute norm when ``want`` is zero)."""
    want64 = want.double()
    difference = float(torch.linalg.vector_norm(got.double() - want64))
    scale = float(torch.linalg.vector_norm(want64))
    return difference / scale if scale > 0 else difference


def train_step_bound(eager_error: float) -> float:
    """The largest relative error of the compiled bf16 step against the eager fp32 step, given
    the eager bf16 step's own (:data:`TRAIN_STEP_ERROR_FACTOR`, :data:`TRAIN_STEP_ERROR_FLOOR`)."""
    return TRAIN_STEP_ERROR_FACTOR * eager_error + TRAIN_STEP_ERROR_FLOOR
