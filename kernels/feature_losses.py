"""The training objective's three losses on F as one op (docs/method.md §5): L_drop = mean |F − F_drop|
and the alignment losses (L_sim, L_norm), each of ``F.float()``, ``F_drop.float()`` and
``fc_weight.float()`` — fp32 losses, gradients in the inputs' dtypes — with one backward kernel.

As two ops, each backward reads F and writes its own ∂L/∂F, and autograd adds the two: F read
twice, ∂L/∂F written twice, and one more pass to add them. Here one pass
(``alignment_loss._feature_grad_kernel`` with F_drop) reads F and F_drop once and writes ∂L/∂F
and ∂L/∂F_drop once: L_drop's and the alignment's gradients are added in fp32 and rounded once,
as autograd's sum of the two fp32 gradients of one ``F.float()`` copy is.

The forward runs the two ops' kernels (``consistency_loss._forward``, ``alignment_loss._forward``).
"""

from __future__ import annotations

import torch

from fastwsol.kernels import alignment_loss, consistency_loss, runtime


@torch.library.custom_op("fastwsol::feature_losses", mutates_args=())
def _feature_losses_op(
    feature: torch.Tensor, feature_dropped: torch.Tensor, fc_weight: torch.Tensor, target: torch.Tensor,
    fg_threshold: float, bg_threshold: float, fine_grained: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    loss_drop = consistency_loss._forward(feature, feature_dropped, upcast=True)
    loss_sim, loss_norm, norm, sim, norm_coef, sim_coef = alignment_loss._forward(
        feature, fc_weight, target, fg_threshold, bg_threshold, fine_grained, upcast=True)
    return loss_drop, loss_sim, loss_norm, norm, sim, norm_coef, sim_coef


@_feature_losses_op.register_fake
def _(feature, feature_dropped, fc_weight, target, fg_threshold, bg_threshold, fine_grained):
    batch, _, height, width = feature.shape
    loss = feature.new_empty((), dtype=torch.float32)
    position_map = feature.new_empty((batch, height * width), dtype=torch.float32)
    return loss, loss.clone(), loss.clone(), *(position_map.clone() for _ in range(4))


@torch.library.custom_op("fastwsol::feature_losses_backward", mutates_args=())
def _feature_losses_backward_op(
    grad_drop: torch.Tensor, grad_sim: torch.Tensor, grad_norm: torch.Tensor, feature: torch.Tensor,
    feature_dropped: torch.Tensor, fc_weight: torch.Tensor, target: torch.Tensor,
    norm: torch.Tensor, sim: torch.Tensor, norm_coef: torch.Tensor, sim_coef: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(∂L/∂F, ∂L/∂F_drop, ∂L/∂w) of g_drop·L_drop + g_sim·L_sim + g_norm·L_norm."""
    scale = consistency_loss.gradient_scale(grad_drop, feature.numel())
    grad_feature, grad_weight, grad_dropped = alignment_loss._backward(
        grad_sim, grad_norm, feature, fc_weight, target, norm, sim, norm_coef, sim_coef,
        feature_dropped=feature_dropped, drop_scale=scale)
    return grad_feature, grad_dropped, grad_weight


@_feature_losses_backward_op.register_fake
def _(grad_drop, grad_sim, grad_norm, feature, feature_dropped, fc_weight, target, norm, sim, norm_coef, sim_coef):
    return torch.empty_like(feature), torch.empty_like(feature_dropped), torch.empty_like(fc_weight)


def _setup_context(ctx, inputs, output):
    feature, feature_dropped, fc_weight, target, *_ = inputs
    *_, norm, sim, norm_coef, sim_coef = output
    ctx.mark_non_differentiable(norm, sim, norm_coef, sim_coef)
    ctx.save_for_backward(feature, feature_dropped, fc_weight, target, norm, sim, norm_coef, sim_coef)


def _autograd_backward(ctx, grad_drop, grad_sim, grad_norm, *_):
    saved = ctx.saved_tensors
    grad_feature, grad_dropped, grad_weight = _feature_losses_backward_op(
        *runtime.upstream_gradients((grad_drop, grad_sim, grad_norm), saved[0]), *saved)
    return grad_feature, grad_dropped, grad_weight, None, None, None, None


_feature_losses_op.register_autograd(_autograd_backward, setup_context=_setup_context)


def feature_losses(
    feature: torch.Tensor, feature_dropped: torch.Tensor, fc_weight: torch.Tensor, target: torch.Tensor, *,
    fg_threshold: float, bg_threshold: float, fine_grained: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(L_drop, L_sim, L_norm) of ``feature.float()``, ``feature_dropped.float()`` and
    ``fc_weight.float()`` (fp32; same semantics as ``consistency_loss`` and ``alignment_loss`` with
    ``upcast=True``), gradients in the inputs' dtypes from one backward kernel (module docstring)."""
    loss_drop, loss_sim, loss_norm, *_ = _feature_losses_op(
        feature, feature_dropped, fc_weight, target, float(fg_threshold), float(bg_threshold), bool(fine_grained))
    return loss_drop, loss_sim, loss_norm
