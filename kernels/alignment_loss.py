"""Fused alignment loss (L_sim, L_norm) of docs/method.md §4-5: Triton kernels and autograd glue.

Per image b with positions u, target class y = target_b, ŵ_c = w_c / max(‖w_c‖, 1e-12):

    n_u = ‖F_u‖,  c_u = max(n_u, 1e-12),  S_u = ⟨ŵ_y, F_u⟩ / c_u,  S*_u = max_c ⟨ŵ_c, F_u⟩ / c_u
    m = min_u n_u (first index i_min),  Δ = max_u (n_u − m) (first index i_max),  F̂_u = (n_u − m) / (Δ + ε)
    L_sim_b  = Σ bg_sim·S / (|bg_sim| + ε) − Σ fg_sim·S / (|fg_sim| + ε),   fg_sim = F̂ > τ_fg, bg_sim = F̂ < τ_bg
    L_norm_b = Σ bg_norm·F̂ / (|bg_norm| + ε) − Σ fg_norm·F̂ / (|fg_norm| + ε),  fg_norm = S* > 0, bg_norm = S* < 0
    (S* = S when not fine-grained; ε = 1e-15; the losses are batch means.)

Forward, two launches (fine-grained: three), backward one:
1. ``_position_stats_kernel`` — one pass over F (per tile of 256 classes; target-only: one pass):
   n_u, S_u and (fine-grained) the class-max of ⟨ŵ_c, F_u⟩ by one bf16 ``tl.dot`` (bf16(ŵ) and
   bf16(F): exact products, fp32 sums); the B×C×H×W similarity is never stored. Only the sign
   of S* is used (the norm masks), and the one-pass dot is within a bound of the exact one
   (``_dot_error_bound``): positions whose |max| is within it go to a recheck list.
2. ``_class_max_recheck_kernel`` (fine-grained) — S* again at the listed positions, from fp32 ŵ
   and F by the ``CLASS_DOT_PRECISION`` (tf32x3) dot, so the masks are those of an fp32 class dot. A
   fixed grid sized for every position; programs past the list's length do nothing.
3. ``_image_loss_kernel`` — per image on the B×HW maps: min/max, F̂, the four masks, the
   masked means, the per-image losses, and the per-position loss gradients (below) per unit
   upstream gradient, so backward needs no second reduction.
4. ``_feature_grad_kernel`` — re-reads F once, writes dF once, and the per-tile partial sums
   that give the target rows of dW; one [channels × positions] tile per program (no channel loop,
   many programs). With F_drop (``fastwsol.kernels.feature_losses``) the same pass adds L_drop's
   gradient to dF before its one rounding and writes dF_drop.

Gradient (with g_s, g_n the upstream gradients of L_sim, L_norm):

    h_u = g_s/B · (bg_sim_u/(|bg_sim|+ε) − fg_sim_u/(|fg_sim|+ε))                = ∂L/∂S_u
    q_u = g_n/B · (bg_norm_u/(|bg_norm|+ε) − fg_norm_u/(|fg_norm|+ε))             = ∂L/∂F̂_u
    r_u = q_u/(Δ+ε) − [u = i_max] · Σ_v q_v F̂_v/(Δ+ε)                            = ∂L/∂(n_u − m)
    ∂L/∂n_u = r_u − [u = i_min] · Σ_v r_v
    ∂L/∂F_u = a_u F_u + b_u ŵ_y,   b_u = h_u / c_u,
              a_u = [n_u > 0] ∂L/∂n_u / n_u − [n_u ≥ 1e-12] b_u S_u / n_u
    ∂L/∂ŵ_c = Σ_{b: y_b = c} Σ_u b_u F_u,
    ∂L/∂w_c = (∂L/∂ŵ_c − [‖w_c‖ ≥ 1e-12] ŵ_c ⟨ŵ_c, ∂L/∂ŵ_c⟩) / max(‖w_c‖, 1e-12)

The indicator terms are autograd's own conventions for the reference: the norm's gradient is
0 at a zero vector, ``clamp_min`` passes gradient only where ‖·‖ ≥ 1e-12, and
``min/max(dim)`` route gradient to the first index. Everything is accumulated in fp32; the
gradients are returned in the inputs' dtypes.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from fastwsol.kernels import runtime
from fastwsol.kernels.addressing import in_image, layout_constants, tile_offsets
from fastwsol.kernels.rounding import round_to_dtype

NORM_CLAMP = 1e-12  # F.normalize's eps (the kernels spell it, and ε = 1e-15, as literals)
MAX_BLOCK_CLASSES = 256  # class-tile width: CUB's 200 classes in one pass over F
BLOCK_POSITIONS = 32
BLOCK_CHANNELS = 32
# Fine-grained forward. Every program reads all of ŵ (C×D bf16) from L2, so L2 traffic falls with
# the positions per program; the largest block giving at least FILL_PROGRAMS programs (one per
# H100 SM) is taken, else the smallest (bench/results/alignment_forward_blocking.md: registers,
# spills and shared memory of each blocking). (positions, channels per step), largest first: 64
# positions step 32 channels, since 64 × 64 needs 238-255 registers on sm_80 and spills there
# under Triton 3.6, while 64 × 32 needs at most 226, with the same programs, waves and ŵ traffic.
FINE_BLOCKINGS = ((64, 32), (32, 64))
FINE_WARPS, FINE_STAGES = 8, 3
FILL_PROGRAMS = 132
# The precision of the dot that decides the class max's sign, the recheck's: tf32x3 is within an
# fp32 dot's error (three TF32 products) at a third of an "ieee" dot's cost on tensor cores.
CLASS_DOT_PRECISION = "tf32x3"
# The recheck: listed positions per program, channels per step (fp32 operands), warps.
RECHECK_POSITIONS, RECHECK_CHANNELS, RECHECK_WARPS = 32, 16, 8
# Backward: one [channels × positions] tile per program (no channel loop), 8 values per thread.
GRAD_BLOCK_POSITIONS, GRAD_BLOCK_CHANNELS, GRAD_WARPS = 64, 32, 8


@triton.jit
def _position_stats_kernel(
    feature_ptr, w_target_ptr, w_dot_ptr, bound_ptr, norm_ptr, sim_ptr, max_sim_ptr, recheck_count_ptr, recheck_ptr,
    D, N, W, C,
    stride_b, stride_d, stride_h, stride_w,
    FINE_GRAINED: tl.constexpr, DOT_BF16: tl.constexpr, FLAT_HW: tl.constexpr, ALIGN: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """n_u = ‖F_u‖, S_u = ⟨ŵ_y, F_u⟩/max(n_u, 1e-12) and (fine-grained) S*_u by the one-pass bf16
    class dot, with the positions whose S* sign it leaves open appended to the recheck list."""
    b = tl.program_id(0)
    u = tl.program_id(1) * BLOCK_P + tl.arange(0, BLOCK_P)
    u_mask = in_image(u, N, ALIGN)
    image = feature_ptr + b.to(tl.int64) * stride_b
    F_IS_BF16: tl.constexpr = feature_ptr.dtype.element_ty == tl.bfloat16
    # Channel sums accumulated as [BLOCK_D, BLOCK_P] tiles and reduced once after the loop: a
    # reduction over channels crosses warps (shared memory and a barrier), so not per iteration.
    sumsq_tile = tl.zeros([BLOCK_D, BLOCK_P], dtype=tl.float32)
    dot_target_tile = tl.zeros([BLOCK_D, BLOCK_P], dtype=tl.float32)
    classes = tl.arange(0, BLOCK_C)
    best = tl.full([BLOCK_P], float("-inf"), dtype=tl.float32)
    # One pass over F when C ≤ BLOCK_C; else one more per class tile (re-reading this program's F tile, cache-hot).
    class_passes = tl.cdiv(C, BLOCK_C) if FINE_GRAINED else 1
    for class_pass in range(class_passes):
        tile_classes = class_pass * BLOCK_C + classes
        class_dot = tl.zeros([BLOCK_C, BLOCK_P], dtype=tl.float32)
        for d0 in range(0, D, BLOCK_D):
            d = d0 + tl.arange(0, BLOCK_D)
            d_mask = d < D
            offsets = tile_offsets(d, u, W, stride_d, stride_h, stride_w, FLAT_HW, ALIGN)
            f = tl.load(image + offsets, mask=d_mask[:, None] & u_mask[None, :], other=0.0)
            f32 = f.to(tl.float32)
            if class_pass == 0:
                sumsq_tile += f32 * f32
                w_target = tl.load(w_target_ptr + b * D + d, mask=d_mask, other=0.0)
                dot_target_tile += f32 * w_target[:, None]
            if FINE_GRAINED:
                # bf16(F): exact for a bf16 F; rounded to nearest even on the bits otherwise (the
                # interpreter truncates a cast).
                if F_IS_BF16:
                    f_dot = f
                else:
                    f_dot = round_to_dtype(f32, tl.bfloat16).to(tl.bfloat16)
                w_tile = tl.load(
                    w_dot_ptr + tile_classes[:, None] * D + d[None, :],
                    mask=(tile_classes[:, None] < C) & d_mask[None, :], other=0.0,
                )
                # bf16 × bf16 products are exact in fp32, accumulated in fp32. The interpreter's
                # tl.dot multiplies bf16 bit patterns, so there the same values go in as fp32.
                if DOT_BF16:
                    class_dot = tl.dot(w_tile, f_dot, class_dot)
                else:
                    class_dot = tl.dot(w_tile.to(tl.float32), f_dot.to(tl.float32), class_dot, input_precision="ieee")
        if FINE_GRAINED:
            best = tl.maximum(best, tl.max(tl.where(tile_classes[:, None] < C, class_dot, float("-inf")), axis=0))
    # IEEE sqrt and division: on a GPU `tl.sqrt` and `/` compile to sqrt.approx.ftz / div.full
    # (≤ 2 ulp), and n, S* decide the strict masks of the image kernel.
    norm = tl.sqrt_rn(tl.sum(sumsq_tile, axis=0))
    clamped = tl.maximum(norm, 1e-12)
    tl.store(norm_ptr + b * N + u, norm, mask=u_mask)
    tl.store(sim_ptr + b * N + u, tl.div_rn(tl.sum(dot_target_tile, axis=0), clamped), mask=u_mask)
    if FINE_GRAINED:
        tl.store(max_sim_ptr + b * N + u, tl.div_rn(best, clamped), mask=u_mask)
        # |fast − exact| ≤ bound for every class (_dot_error_bound): where |best| is within it,
        # the sign of S* is left to the recheck.
        bound = tl.load(bound_ptr + (0 if F_IS_BF16 else 1)) * norm + tl.load(bound_ptr + 2)
        ambiguous = u_mask & (tl.abs(best) <= bound)
        count = tl.sum(ambiguous.to(tl.int32), axis=0)
        if count > 0:
            start = tl.atomic_add(recheck_count_ptr, count)
            slot = start + tl.cumsum(ambiguous.to(tl.int32), axis=0) - 1
            tl.store(recheck_ptr + slot, b * N + u, mask=ambiguous)


@triton.jit
def _class_max_recheck_kernel(
    feature_ptr, w_unit_ptr, norm_ptr, max_sim_ptr, recheck_count_ptr, recheck_ptr,
    D, N, W, C,
    stride_b, stride_d, stride_h, stride_w,
    BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_C: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    """S*_u again at the listed positions, from fp32 ŵ and F by the ``CLASS_DOT_PRECISION`` dot:
    BLOCK_R listed positions per program; programs past the list's length do nothing."""
    first = tl.program_id(0) * BLOCK_R
    count = tl.load(recheck_count_ptr)
    if first < count:
        listed = first + tl.arange(0, BLOCK_R)
        valid = listed < count
        position = tl.load(recheck_ptr + listed, mask=valid, other=0)
        b = position // N
        u = position % N
        base = b.to(tl.int64) * stride_b + (u // W) * stride_h + (u % W) * stride_w
        classes = tl.arange(0, BLOCK_C)
        best = tl.full([BLOCK_R], float("-inf"), dtype=tl.float32)
        for class_pass in range(tl.cdiv(C, BLOCK_C)):
            tile_classes = class_pass * BLOCK_C + classes
            class_dot = tl.zeros([BLOCK_C, BLOCK_R], dtype=tl.float32)
            for d0 in range(0, D, BLOCK_D):
                d = d0 + tl.arange(0, BLOCK_D)
                d_mask = d < D
                f = tl.load(feature_ptr + base[None, :] + d[:, None] * stride_d, mask=d_mask[:, None] & valid[None, :],
                            other=0.0).to(tl.float32)
                w_tile = tl.load(w_unit_ptr + tile_classes[:, None] * D + d[None, :],
                                 mask=(tile_classes[:, None] < C) & d_mask[None, :], other=0.0)
                class_dot = tl.dot(w_tile, f, class_dot, input_precision=DOT_PRECISION)
            best = tl.maximum(best, tl.max(tl.where(tile_classes[:, None] < C, class_dot, float("-inf")), axis=0))
        clamped = tl.maximum(tl.load(norm_ptr + position, mask=valid, other=1.0), 1e-12)
        tl.store(max_sim_ptr + position, tl.div_rn(best, clamped), mask=valid)


@triton.jit
def _image_loss_kernel(
    norm_ptr, sim_ptr, mask_source_ptr, loss_sim_ptr, loss_norm_ptr, norm_coef_ptr, sim_coef_ptr,
    N, inv_batch, fg_threshold, bg_threshold,
    BLOCK_P: tl.constexpr,
):
    """Per image: F̂ from the first-index min/max, the four strict masks, the masked means
    (ε = 1e-15), L_sim_b, L_norm_b, and ∂L/∂n_u, ∂L/∂S_u for unit upstream gradients."""
    b = tl.program_id(0)
    u = tl.arange(0, BLOCK_P)
    valid = u < N
    n = tl.load(norm_ptr + b * N + u, mask=valid, other=0.0)
    s = tl.load(sim_ptr + b * N + u, mask=valid, other=0.0)
    source = tl.load(mask_source_ptr + b * N + u, mask=valid, other=0.0)

    n_min = tl.min(tl.where(valid, n, float("inf")), axis=0)
    i_min = tl.min(tl.where(valid & (n == n_min), u, BLOCK_P), axis=0)
    shifted = n - n_min
    spread = tl.max(tl.where(valid, shifted, float("-inf")), axis=0)
    i_max = tl.min(tl.where(valid & (shifted == spread), u, BLOCK_P), axis=0)
    denominator = spread + 1e-15
    normalized = tl.div_rn(shifted, denominator)  # IEEE division: F̂ decides the strict τ masks

    fg_sim = valid & (normalized > fg_threshold)
    bg_sim = valid & (normalized < bg_threshold)
    fg_norm = valid & (source > 0)
    bg_norm = valid & (source < 0)
    # Per-position weight of each masked mean: mask_u / (Σ mask + ε). IEEE division throughout
    # this per-image kernel: it costs nothing here, and the losses then round as torch's do.
    w_fg_sim = tl.where(fg_sim, tl.div_rn(1.0, tl.sum(fg_sim.to(tl.float32), axis=0) + 1e-15), 0.0)
    w_bg_sim = tl.where(bg_sim, tl.div_rn(1.0, tl.sum(bg_sim.to(tl.float32), axis=0) + 1e-15), 0.0)
    w_fg_norm = tl.where(fg_norm, tl.div_rn(1.0, tl.sum(fg_norm.to(tl.float32), axis=0) + 1e-15), 0.0)
    w_bg_norm = tl.where(bg_norm, tl.div_rn(1.0, tl.sum(bg_norm.to(tl.float32), axis=0) + 1e-15), 0.0)
    sim_weight = w_bg_sim - w_fg_sim
    norm_weight = w_bg_norm - w_fg_norm
    tl.store(loss_sim_ptr + b, tl.sum(sim_weight * s, axis=0))
    tl.store(loss_norm_ptr + b, tl.sum(norm_weight * normalized, axis=0))

    q = norm_weight * inv_batch  # ∂L/∂F̂_u
    r = tl.div_rn(q, denominator) - tl.where(u == i_max, tl.div_rn(tl.sum(q * normalized, axis=0), denominator), 0.0)
    r = tl.where(valid, r, 0.0)
    dn = r - tl.where(u == i_min, tl.sum(r, axis=0), 0.0)
    tl.store(norm_coef_ptr + b * N + u, dn, mask=valid)
    tl.store(sim_coef_ptr + b * N + u, sim_weight * inv_batch, mask=valid)


@triton.jit
def _feature_grad_kernel(
    feature_ptr, dropped_ptr, w_target_ptr, norm_ptr, sim_ptr, norm_coef_ptr, sim_coef_ptr,
    grad_sim_ptr, grad_norm_ptr, drop_scale_ptr, grad_feature_ptr, grad_dropped_ptr, w_grad_partial_ptr,
    D, N, W,
    stride_b, stride_d, stride_h, stride_w,
    drop_stride_b, drop_stride_d, drop_stride_h, drop_stride_w,
    grad_stride_b, grad_stride_d, grad_stride_h, grad_stride_w,
    grad_drop_stride_b, grad_drop_stride_d, grad_drop_stride_h, grad_drop_stride_w,
    HAS_DROPPED: tl.constexpr, FLAT_HW: tl.constexpr, ALIGN: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """One [BLOCK_D × BLOCK_P] tile of ∂L/∂F = a_u F_u + b_u ŵ_y (module docstring), and its
    Σ_u b_u F_u for ∂L/∂ŵ_y. ``HAS_DROPPED``: with L_drop's gradient s·sign(F − F_drop) added
    in fp32 before the one rounding (s = g_drop/N), and −s·sign(F − F_drop) written to F_drop's.

    A program owns one tile and no channel loop: the sum over its positions is one reduction."""
    b = tl.program_id(0)
    tile = tl.program_id(1)
    u = tile * BLOCK_P + tl.arange(0, BLOCK_P)
    d = tl.program_id(2) * BLOCK_D + tl.arange(0, BLOCK_D)
    u_mask = in_image(u, N, ALIGN)
    d_mask = d < D
    mask = d_mask[:, None] & u_mask[None, :]
    grad_sim = tl.load(grad_sim_ptr).to(tl.float32)
    grad_norm = tl.load(grad_norm_ptr).to(tl.float32)
    n = tl.load(norm_ptr + b * N + u, mask=u_mask, other=0.0)
    s = tl.load(sim_ptr + b * N + u, mask=u_mask, other=0.0)
    dn = tl.load(norm_coef_ptr + b * N + u, mask=u_mask, other=0.0) * grad_norm
    # IEEE division (a plain '/' is the approximate div.full on a GPU): costs nothing per position.
    coef_w = tl.div_rn(tl.load(sim_coef_ptr + b * N + u, mask=u_mask, other=0.0) * grad_sim, tl.maximum(n, 1e-12))
    safe_n = tl.where(n > 0, n, 1.0)
    coef_f = tl.where(n > 0, tl.div_rn(tl.where(n > 0, dn, 0.0) - tl.where(n >= 1e-12, coef_w * s, 0.0), safe_n), 0.0)

    b64 = b.to(tl.int64)
    offsets = tile_offsets(d, u, W, stride_d, stride_h, stride_w, FLAT_HW, ALIGN)
    f = tl.load(feature_ptr + b64 * stride_b + offsets, mask=mask, other=0.0).to(tl.float32)
    w_target = tl.load(w_target_ptr + b * D + d, mask=d_mask, other=0.0)
    grad = coef_f[None, :] * f + coef_w[None, :] * w_target[:, None]
    if HAS_DROPPED:
        drop_offsets = tile_offsets(d, u, W, drop_stride_d, drop_stride_h, drop_stride_w, FLAT_HW, ALIGN)
        g = tl.load(dropped_ptr + b64 * drop_stride_b + drop_offsets, mask=mask, other=0.0).to(tl.float32)
        difference = f - g
        drop_grad = tl.where(difference > 0, 1.0, tl.where(difference < 0, -1.0, 0.0)) * tl.load(drop_scale_ptr)
        grad += drop_grad
        grad_drop_offsets = tile_offsets(d, u, W, grad_drop_stride_d, grad_drop_stride_h, grad_drop_stride_w,
                                         FLAT_HW, ALIGN)
        grad_dropped = round_to_dtype(-drop_grad, grad_dropped_ptr.dtype.element_ty)
        tl.store(grad_dropped_ptr + b64 * grad_drop_stride_b + grad_drop_offsets,
                 grad_dropped.to(grad_dropped_ptr.dtype.element_ty), mask=mask)
    grad_offsets = tile_offsets(d, u, W, grad_stride_d, grad_stride_h, grad_stride_w, FLAT_HW, ALIGN)
    # Rounded as torch's cast of an fp32 gradient rounds (round_to_dtype: the interpreter truncates bf16).
    grad = round_to_dtype(grad, grad_feature_ptr.dtype.element_ty)
    tl.store(grad_feature_ptr + b64 * grad_stride_b + grad_offsets, grad.to(grad_feature_ptr.dtype.element_ty),
             mask=mask)
    partial = w_grad_partial_ptr + (b * tl.num_programs(1) + tile).to(tl.int64) * D
    tl.store(partial + d, tl.sum(f * coef_w[None, :], axis=1), mask=d_mask)


# ---------------------------------------------------------------------------------------------
# Launch configuration (one source of truth; fastwsol/kernel_build.py builds what these launches select).


def forward_launch(fine_grained: bool, batch: int, positions: int) -> dict:
    """BLOCK_P, BLOCK_D, num_warps and num_stages of ``_position_stats_kernel``. Per position the
    arithmetic does not depend on them (each position's channel sums and class dots run over the
    same channel steps in the same order)."""
    if not fine_grained:
        return {"BLOCK_P": BLOCK_POSITIONS, "BLOCK_D": BLOCK_CHANNELS, "num_warps": 4, "num_stages": 2}
    block_p, block_d = next(((p, d) for p, d in FINE_BLOCKINGS if batch * triton.cdiv(positions, p) >= FILL_PROGRAMS),
                            FINE_BLOCKINGS[-1])
    return {"BLOCK_P": block_p, "BLOCK_D": block_d, "num_warps": FINE_WARPS, "num_stages": FINE_STAGES}


def block_classes(num_classes: int) -> int:
    return min(max(16, triton.next_power_of_2(num_classes)), MAX_BLOCK_CLASSES)


def _block_all_positions(num_positions: int) -> int:
    return max(16, triton.next_power_of_2(num_positions))


def _unit_weight(fc_weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(ŵ = w / max(‖w‖, 1e-12), ‖w‖), C×D and C, in fp32."""
    weight = fc_weight.float()
    norm = torch.linalg.vector_norm(weight, dim=1)
    return weight / norm.clamp_min(NORM_CLAMP)[:, None], norm


def _dot_error_bound(w_unit: torch.Tensor, w_dot: torch.Tensor) -> torch.Tensor:
    """[β_bf16, β, α] (fp32, rounded up): |fast_c − ⟨ŵ_c, F_u⟩| ≤ β_bf16·‖F_u‖ + α for a bf16 F and
    ≤ β·‖F_u‖ + α for any other, for every class c, where fast_c is the one-pass dot of
    ŵ_bf16 = bf16(ŵ) and bf16(F_u):

        fast_c − ⟨ŵ_c, F_u⟩ = (fast_c − ⟨ŵ_bf16,c, bf16(F_u)⟩) + ⟨ŵ_bf16,c − ŵ_c, bf16(F_u)⟩ + ⟨ŵ_c, bf16(F_u) − F_u⟩.

    The products are exact in fp32; their sum over D channels in the fp32 accumulator loses at most
    2^-23 (one ulp, were it truncated) of the running sum per addition, doubled for the alignment
    inside the tensor cores' block additions: ≤ (D + 16)·2^-22·‖ŵ_bf16,c‖·‖bf16(F_u)‖ (Cauchy-Schwarz,
    as the other two terms: ‖ŵ_bf16,c − ŵ_c‖·‖bf16(F_u)‖ and ‖ŵ_c‖·‖bf16(F_u) − F_u‖). bf16(F) = F
    for a bf16 F; otherwise ‖bf16(F_u) − F_u‖ ≤ 2^-8·‖F_u‖ (round to nearest, 8 significant bits).
    α = 2^-100 covers products flushed to zero and subnormal F (at ‖F_u‖ = 0 every position is
    rechecked, and S* = 0 exactly). A factor 1 + 2^-10 covers the fp32 rounding of ‖F_u‖."""
    w64, w_dot64 = w_unit.double(), w_dot.double()
    rounded_norm = torch.linalg.vector_norm(w_dot64, dim=1).max()
    beta_bf16 = (w_unit.shape[1] + 16) * 2.0**-22 * rounded_norm + torch.linalg.vector_norm(w_dot64 - w64, dim=1).max()
    beta = beta_bf16 * (1 + 2.0**-8) + torch.linalg.vector_norm(w64, dim=1).max() * 2.0**-8
    bound = torch.stack([beta_bf16 * (1 + 2.0**-10), beta * (1 + 2.0**-10), torch.full_like(beta, 2.0**-100)])
    bound = bound.float()
    # full_like, not torch.tensor(inf, device=...): a Python value copied to the GPU synchronises,
    # which CUDA graph capture refuses and which would stall every step
    return torch.nextafter(bound, torch.full_like(bound, float("inf")))


def _forward(feature, fc_weight, target, fg_threshold, bg_threshold, fine_grained, upcast=False):
    runtime.check_runnable(feature, "alignment_loss")
    batch, channels, height, width = feature.shape
    positions = height * width
    num_classes = fc_weight.shape[0]
    w_unit, _ = _unit_weight(fc_weight)
    w_target = w_unit[target].contiguous()
    # Separate buffers: a custom op's outputs may not alias one another.
    norm, sim, norm_coef, sim_coef = (
        torch.empty((batch, positions), device=feature.device, dtype=torch.float32) for _ in range(4)
    )
    loss_sim_per_image, loss_norm_per_image = (
        torch.empty(batch, device=feature.device, dtype=torch.float32) for _ in range(2)
    )
    if fine_grained:
        max_sim = torch.empty_like(sim)
        w_dot = w_unit.to(torch.bfloat16)
        bound = _dot_error_bound(w_unit, w_dot)
        recheck_count = torch.zeros(1, device=feature.device, dtype=torch.int32)
        recheck = torch.empty(batch * positions, device=feature.device, dtype=torch.int32)
    else:  # target-only: never read or written
        max_sim, w_dot, bound, recheck_count, recheck = sim, w_target, w_target, w_target, w_target
    if batch and positions:
        launch = forward_launch(fine_grained, batch, positions)
        _position_stats_kernel[(batch, triton.cdiv(positions, launch["BLOCK_P"]))](
            feature, w_target, w_dot, bound, norm, sim, max_sim, recheck_count, recheck,
            channels, positions, width, num_classes, *feature.stride(),
            FINE_GRAINED=fine_grained, DOT_BF16=not runtime.interpreter_enabled(), **layout_constants(feature),
            BLOCK_C=block_classes(num_classes), **launch,
        )
        if fine_grained:
            _class_max_recheck_kernel[(triton.cdiv(batch * positions, RECHECK_POSITIONS),)](
                feature, w_unit, norm, max_sim, recheck_count, recheck,
                channels, positions, width, num_classes, *feature.stride(),
                BLOCK_R=RECHECK_POSITIONS, BLOCK_D=RECHECK_CHANNELS, BLOCK_C=block_classes(num_classes),
                DOT_PRECISION=CLASS_DOT_PRECISION, num_warps=RECHECK_WARPS,
            )
        _image_loss_kernel[(batch,)](
            norm, sim, max_sim, loss_sim_per_image, loss_norm_per_image, norm_coef, sim_coef,
            positions, 1.0 / batch, float(fg_threshold), float(bg_threshold),
            BLOCK_P=_block_all_positions(positions), num_warps=4,
        )
    loss_dtype = torch.float32 if upcast else feature.dtype
    loss_sim = loss_sim_per_image.mean().to(loss_dtype)
    loss_norm = loss_norm_per_image.mean().to(loss_dtype)
    return loss_sim, loss_norm, norm, sim, norm_coef, sim_coef


def _backward(grad_sim, grad_norm, feature, fc_weight, target, norm, sim, norm_coef, sim_coef,
              feature_dropped=None, drop_scale=None):
    """(∂L/∂F, ∂L/∂w, ∂L/∂F_drop or None). With ``feature_dropped`` and ``drop_scale`` (g_drop/N,
    fp32, one element), L_drop's gradient is added to ∂L/∂F inside the kernel, before its one
    rounding, and ∂L/∂F_drop is written by the same pass (F and F_drop read once)."""
    runtime.check_runnable(feature, "alignment_loss")
    batch, channels, height, width = feature.shape
    positions = height * width
    w_unit, w_norm = _unit_weight(fc_weight)
    w_target = w_unit[target].contiguous()
    grad_feature = torch.empty_like(feature)  # keeps channels_last when the input is
    has_dropped = feature_dropped is not None
    grad_dropped = torch.empty_like(feature_dropped) if has_dropped else None
    grid = (batch, triton.cdiv(positions, GRAD_BLOCK_POSITIONS), triton.cdiv(channels, GRAD_BLOCK_CHANNELS))
    partial = torch.empty((batch, grid[1], channels), device=feature.device, dtype=torch.float32)
    if batch and positions and channels:
        grad_sim, grad_norm = grad_sim.float().contiguous(), grad_norm.float().contiguous()
        # Without F_drop its arguments are F's (never read: HAS_DROPPED is a constant).
        dropped, scale, dropped_grad = (feature_dropped, drop_scale, grad_dropped) if has_dropped else (
            feature, grad_sim, grad_feature)
        tensors = (feature, dropped, grad_feature, dropped_grad)
        _feature_grad_kernel[grid](
            feature, dropped, w_target, norm, sim, norm_coef, sim_coef,
            grad_sim, grad_norm, scale, grad_feature, dropped_grad, partial,
            channels, positions, width, *(s for t in tensors for s in t.stride()),
            HAS_DROPPED=has_dropped, **layout_constants(*tensors),
            BLOCK_P=GRAD_BLOCK_POSITIONS, BLOCK_D=GRAD_BLOCK_CHANNELS, num_warps=GRAD_WARPS,
        )
    else:
        partial.zero_()
    # ∂L/∂ŵ_c sums the images of class c (a class may repeat in a batch), then F.normalize's backward.
    # A one-hot product, not index_add_ (atomic adds on CUDA: not reproducible run to run).
    one_hot = torch.nn.functional.one_hot(target, w_unit.shape[0]).to(torch.float32)
    grad_unit = one_hot.t() @ partial.sum(dim=1)
    # clamp_min passes gradient to ‖w‖ only where ‖w‖ ≥ 1e-12 (autograd's convention).
    radial = (w_unit * grad_unit).sum(dim=1, keepdim=True) * w_unit * (w_norm >= NORM_CLAMP)[:, None]
    grad_weight = (grad_unit - radial) / w_norm.clamp_min(NORM_CLAMP)[:, None]
    return grad_feature, grad_weight.to(fc_weight.dtype), grad_dropped


# ---------------------------------------------------------------------------------------------
# torch.library registration: an opaque custom op (safe under the CPU interpreter and on GPU),
# with the per-position maps as extra outputs so backward re-reads only F.


@torch.library.custom_op("fastwsol::alignment_loss", mutates_args=())
def _alignment_loss_op(
    feature: torch.Tensor, fc_weight: torch.Tensor, target: torch.Tensor,
    fg_threshold: float, bg_threshold: float, fine_grained: bool, upcast: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return _forward(feature, fc_weight, target, fg_threshold, bg_threshold, fine_grained, upcast)


@_alignment_loss_op.register_fake
def _(feature, fc_weight, target, fg_threshold, bg_threshold, fine_grained, upcast=False):
    batch, _, height, width = feature.shape
    loss = feature.new_empty((), dtype=torch.float32 if upcast else feature.dtype)
    position_map = feature.new_empty((batch, height * width), dtype=torch.float32)
    return loss, loss.clone(), position_map, position_map.clone(), position_map.clone(), position_map.clone()


@torch.library.custom_op("fastwsol::alignment_loss_backward", mutates_args=())
def _alignment_loss_backward_op(
    grad_sim: torch.Tensor, grad_norm: torch.Tensor, feature: torch.Tensor, fc_weight: torch.Tensor,
    target: torch.Tensor, norm: torch.Tensor, sim: torch.Tensor, norm_coef: torch.Tensor, sim_coef: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    return _backward(grad_sim, grad_norm, feature, fc_weight, target, norm, sim, norm_coef, sim_coef)[:2]


@_alignment_loss_backward_op.register_fake
def _(grad_sim, grad_norm, feature, fc_weight, target, norm, sim, norm_coef, sim_coef):
    return torch.empty_like(feature), torch.empty_like(fc_weight)


def _setup_context(ctx, inputs, output):
    feature, fc_weight, target, *_ = inputs
    _, _, norm, sim, norm_coef, sim_coef = output
    ctx.mark_non_differentiable(norm, sim, norm_coef, sim_coef)
    ctx.save_for_backward(feature, fc_weight, target, norm, sim, norm_coef, sim_coef)


def _autograd_backward(ctx, grad_sim, grad_norm, *_):
    saved = ctx.saved_tensors
    grad_feature, grad_weight = _alignment_loss_backward_op(
        *runtime.upstream_gradients((grad_sim, grad_norm), saved[0]), *saved)
    return grad_feature, grad_weight, None, None, None, None, None


_alignment_loss_op.register_autograd(_autograd_backward, setup_context=_setup_context)


def alignment_loss(
    feature: torch.Tensor,
    fc_weight: torch.Tensor,
    target: torch.Tensor,
    *,
    fg_threshold: float,
    bg_threshold: float,
    fine_grained: bool,
    upcast: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(L_sim, L_norm) of docs/method.md §5 by the fused kernels; same semantics as
    ``fastwsol.method.reference.alignment_loss`` (see the module docstring for the math).

    ``upcast``: the result for ``feature.float()`` and ``fc_weight.float()`` (fp32 losses, the
    fp32 kernel's dot precision), with gradients in the inputs' dtypes, without the fp32 copy:
    the kernels read a 16-bit F directly and compute in fp32 as they always do."""
    loss_sim, loss_norm, *_ = _alignment_loss_op(
        feature, fc_weight, target, float(fg_threshold), float(bg_threshold), bool(fine_grained), bool(upcast)
    )
    return loss_sim, loss_norm


@torch.no_grad()
def position_maps(feature: torch.Tensor, fc_weight: torch.Tensor, target: torch.Tensor, *, fg_threshold: float,
                  bg_threshold: float, fine_grained: bool) -> tuple[torch.Tensor, ...]:
    """The forward's per-position maps, B × HW in fp32, as the backward reads them (module
    docstring): n_u = ‖F_u‖, S_u, ∂L/∂n_u and ∂L/∂S_u for unit upstream gradients. The sign of
    ∂L/∂S_u is the similarity masks' region (negative: fg_sim, positive: bg_sim), as is that of
    ∂L/∂n_u for the norm masks at every position but i_min and i_max."""
    _, _, norm, sim, norm_coef, sim_coef = _alignment_loss_op(
        feature, fc_weight, target, float(fg_threshold), float(bg_threshold), bool(fine_grained)
    )
    return norm, sim, norm_coef, sim_coef
