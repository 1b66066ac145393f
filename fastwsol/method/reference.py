"""The method in plain eager PyTorch: the spec in code (docs/method.md §3-5).

Every fast path (compiled, Triton) is tested against the functions here. They are written
for clarity, not speed; each follows the reference implementation's exact semantics
(strict comparisons, eps = 1e-15, ``F.normalize`` clamping, first-index min/max).

Shapes: feature ``B×D×H×W``, fc_weight ``C×D``, target ``B`` (int64).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

EPS = 1e-15  # the reference implementation's eps for min-max and masked means


def norm_map(feature: torch.Tensor) -> torch.Tensor:
    """𝓕_u = ‖F_u‖₂ over channels: ``B×H×W``."""
    return torch.linalg.vector_norm(feature, dim=1)


def minmax_normalize(maps: torch.Tensor) -> torch.Tensor:
    """F̂ = (𝓕 − min 𝓕) / (max(𝓕 − min 𝓕) + eps), per image (first dim).

    Gradient flows through the per-image min and max (to their first index, as
    ``torch.min/max(dim)`` route it).
    """
    flat = maps.flatten(1)
    shifted = flat - flat.min(dim=1).values[:, None]
    normalized = shifted / (shifted.max(dim=1).values[:, None] + EPS)
    return normalized.view_as(maps)


def target_similarity(feature: torch.Tensor, fc_weight: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """S_u = cos(w_y, F_u) with ``F.normalize`` semantics (norms clamped at 1e-12): ``B×H×W``."""
    # Rows picked by a one-hot product, not by indexing: the forward is the same (exact zeros
    # and ones), but indexing's backward accumulates repeated classes with atomic adds in
    # Inductor's parallel C++ code, so compiled training was not reproducible run to run.
    one_hot = F.one_hot(target, fc_weight.shape[0]).to(fc_weight.dtype)
    w = one_hot @ F.normalize(fc_weight, dim=1)  # B×D
    f = F.normalize(feature, dim=1)
    # A product-sum, not einsum: the same contraction, but one Inductor can fuse with F.normalize
    # (einsum becomes a bmm that needs the normalised copy of F stored for backward).
    return (w[:, :, None, None] * f).sum(dim=1)


def max_class_similarity(feature: torch.Tensor, fc_weight: torch.Tensor) -> torch.Tensor:
    """S*_u = max_c cos(w_c, F_u) = max_c ⟨ŵ_c, F_u⟩ / max(‖F_u‖, 1e-12): ``B×H×W``.

    Defines masks only, so no gradient. The positive per-position scale is applied after the
    max (the same value, and no normalised copy of F to build for the class GEMM).
    """
    with torch.no_grad():
        w = F.normalize(fc_weight, dim=1)
        return torch.einsum("cd,bdhw->bchw", w, feature).amax(dim=1) / norm_map(feature).clamp_min(1e-12)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Σ(mask·v) / (Σmask + eps) per image; an empty region gives 0, never NaN."""
    mask = mask.to(values.dtype).flatten(1)
    return (mask * values.flatten(1)).sum(1) / (mask.sum(1) + EPS)


def alignment_loss(
    feature: torch.Tensor,
    fc_weight: torch.Tensor,
    target: torch.Tensor,
    *,
    fg_threshold: float,
    bg_threshold: float,
    fine_grained: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(L_sim, L_norm), batch means of docs/method.md Eq. 8-11.

    fg_sim = F̂ > τ_fg, bg_sim = F̂ < τ_bg;  L_sim = mean_bg(S) − mean_fg(S)
    fg_norm = S* > 0, bg_norm = S* < 0;     L_norm = mean_bg(F̂) − mean_fg(F̂)
    S* = max_c S_c when ``fine_grained`` else S_y. Masks carry no gradient.
    """
    normalized_norm = minmax_normalize(norm_map(feature))
    similarity = target_similarity(feature, fc_weight, target)
    mask_source = max_class_similarity(feature, fc_weight) if fine_grained else similarity.detach()
    masks = (normalized_norm > fg_threshold, normalized_norm < bg_threshold, mask_source > 0, mask_source < 0)
    return alignment_loss_from_masks(normalized_norm, similarity, *masks)


def alignment_loss_from_masks(
    normalized_norm: torch.Tensor,
    similarity: torch.Tensor,
    fg_sim: torch.Tensor,
    bg_sim: torch.Tensor,
    fg_norm: torch.Tensor,
    bg_norm: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(L_sim, L_norm) from F̂, S and the four masks (``B×H×W`` booleans), batch means: the part
    of :func:`alignment_loss` after the masks are drawn, so a check can give masks of its own (a
    kernel's, where a position lies within rounding of a threshold)."""
    loss_sim = masked_mean(similarity, bg_sim) - masked_mean(similarity, fg_sim)
    loss_norm = masked_mean(normalized_norm, bg_norm) - masked_mean(normalized_norm, fg_norm)
    return loss_sim.mean(), loss_norm.mean()


def drop_mask(x: torch.Tensor, threshold: float, drop_prob: float, uniform: torch.Tensor) -> torch.Tensor:
    """keep_u = 0 iff mean_c x_u > γ·max_u(mean_c x) and r_u <= p, else 1: ``B×1×H×W``."""
    with torch.no_grad():
        channel_mean = x.mean(dim=1, keepdim=True)
        image_max = channel_mean.flatten(1).max(dim=1).values.view(-1, 1, 1, 1)
        drop = (channel_mean > threshold * image_max) & (uniform <= drop_prob)
        return (~drop).to(x.dtype)


def attentive_dropout(
    x: torch.Tensor, threshold: float, drop_prob: float, *, uniform: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(x·keep, keep), docs/method.md §3. ``uniform`` (B×1×H×W in [0,1)) replaces the draw."""
    if uniform is None:
        uniform = torch.rand((x.shape[0], 1, *x.shape[2:]), device=x.device)
    keep = drop_mask(x, threshold, drop_prob, uniform)
    return x * keep, keep


def consistency_loss(feature: torch.Tensor, feature_dropped: torch.Tensor) -> torch.Tensor:
    """L_drop = mean over all B·D·H·W elements of |F − F_drop| (gradient to both)."""
    return (feature - feature_dropped).abs().mean()


def localization_maps(feature: torch.Tensor, fc_weight: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """The three maps of docs/method.md §4 for the target class, each ``B×H×W``.

    cam: mean over D of w_y,d·F_d,u (the reference divides by D; irrelevant after normalisation);
    norm: min-max normalised norm map F̂; sim: cosine similarity S_y (in [-1, 1]).
    """
    cam = torch.einsum("bd,bdhw->bhw", fc_weight[target], feature) / feature.shape[1]
    return {
        "cam": cam,
        "norm": minmax_normalize(norm_map(feature)),
        "sim": target_similarity(feature, fc_weight, target),
    }
