"""Public entry points of the method's ops, dispatched to a backend.

``backend="reference"`` is the plain-PyTorch spec (``fastwsol.method.reference``); the other
backends keep these signatures and are tested against it: ``"compiled"`` (``torch.compile`` of
the reference, ``fastwsol.method.compiled``), ``"triton"`` (the kernels in ``kernels/``, as
``fastwsol::*`` custom ops) and ``"auto"`` (Triton on CUDA tensors, compiled on CPU). Arguments
are checked here, once, so every backend gets the same clear errors.

The two losses take ``upcast=True`` from the training objective: the loss of ``F.float()`` (fp32
results; gradients reach F in its own dtype, as through ``.float()``'s backward). The reference
and compiled backends apply ``.float()`` literally; the Triton kernels read a 16-bit F directly and
compute in fp32 as they always do, so no fp32 copy of F is written and read back.
"""

from __future__ import annotations

import functools

import torch

from fastwsol.kernels import alignment_loss as alignment_loss_kernel
from fastwsol.kernels import attentive_dropout as attentive_dropout_kernel
from fastwsol.kernels import consistency_loss as consistency_loss_kernel
from fastwsol.kernels import feature_losses as feature_losses_kernel
from fastwsol.kernels import runtime as kernel_runtime
from fastwsol.method import reference
from fastwsol.method.compiled import compiled

BACKENDS = ("auto", "reference", "compiled", "triton")
# Imported with this module, not lazily, so the custom ops exist before torch.compile traces a call.
_KERNELS = {
    "alignment_loss": alignment_loss_kernel,
    "attentive_dropout": attentive_dropout_kernel,
    "consistency_loss": consistency_loss_kernel,
    "feature_losses": feature_losses_kernel,
}


def _resolve_backend(backend: str, tensor: torch.Tensor) -> str:
    """"auto" → "triton" on CUDA tensors, "compiled" (torch.compile of the reference) otherwise.

    "triton" on CPU tensors runs the kernels through Triton's interpreter, which must be enabled
    (``TRITON_INTERPRET=1`` before ``fastwsol`` is imported); otherwise it is an error.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is unknown; choose one of {BACKENDS}")
    if backend == "auto":
        return "triton" if tensor.is_cuda else "compiled"
    if backend == "triton":
        kernel_runtime.check_runnable(tensor, "kernels (backend='triton')")
    return backend


def resolve_backend(backend: str, tensor: torch.Tensor) -> str:
    """The backend ``backend`` runs as for ``tensor``: "reference", "compiled" or "triton"."""
    return _resolve_backend(backend, tensor)


def _dispatch(op: str, backend: str, tensor: torch.Tensor, upcast: bool = False):
    """The function implementing ``op`` for ``backend`` (already checked arguments); ``upcast``:
    on the fp32 upcast of its floating-point tensor arguments (the Triton kernels do it as they read)."""
    resolved = _resolve_backend(backend, tensor)
    if resolved == "triton":
        kernel = getattr(_KERNELS[op], op)
        return functools.partial(kernel, upcast=True) if upcast else kernel
    function = compiled(op) if resolved == "compiled" else getattr(reference, op)
    if not upcast:
        return function

    def on_float(*args, **kwargs):
        return function(*(a.float() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args),
                        **kwargs)

    return on_float


def _check_feature(name: str, feature: torch.Tensor) -> None:
    if not isinstance(feature, torch.Tensor) or feature.dim() != 4:
        shape = tuple(feature.shape) if isinstance(feature, torch.Tensor) else type(feature).__name__
        raise ValueError(f"{name} must be a B×D×H×W tensor, got shape {shape}")
    if not feature.is_floating_point():
        raise ValueError(f"{name} must be floating point, got dtype {feature.dtype}")


def _check_same_device(**tensors: torch.Tensor) -> None:
    devices = {name: t.device for name, t in tensors.items()}
    if len(set(devices.values())) > 1:
        raise ValueError(f"arguments are on different devices: {', '.join(f'{k}={v}' for k, v in devices.items())}")


def _check_alignment_args(
    feature: torch.Tensor, fc_weight: torch.Tensor, target: torch.Tensor, *, upcast: bool = False
) -> None:
    _check_feature("feature", feature)
    if fc_weight.dim() != 2 or fc_weight.shape[1] != feature.shape[1]:
        raise ValueError(
            f"fc_weight must be C×D with D = feature.shape[1] = {feature.shape[1]}, "
            f"got fc_weight shape {tuple(fc_weight.shape)} for feature shape {tuple(feature.shape)}"
        )
    if fc_weight.dtype != feature.dtype and not upcast:
        raise ValueError(f"fc_weight dtype {fc_weight.dtype} differs from feature dtype {feature.dtype}")
    if target.dim() != 1 or target.shape[0] != feature.shape[0]:
        raise ValueError(
            f"target must have shape (B,) = ({feature.shape[0]},), got {tuple(target.shape)}"
        )
    if target.dtype != torch.int64:
        raise ValueError(f"target must be int64, got dtype {target.dtype}")
    _check_same_device(feature=feature, fc_weight=fc_weight, target=target)
    # A value check needs the data: only where it is free (CPU, eager); CUDA asserts on its own.
    if target.device.type == "cpu" and target.numel() and not torch.compiler.is_compiling() and (
        int(target.min()) < 0 or int(target.max()) >= fc_weight.shape[0]
    ):
        raise ValueError(
            f"target values must lie in [0, C) = [0, {fc_weight.shape[0]}), "
            f"got min {int(target.min())} max {int(target.max())}"
        )


def alignment_loss(
    feature: torch.Tensor,
    fc_weight: torch.Tensor,
    target: torch.Tensor,
    *,
    fg_threshold: float,
    bg_threshold: float,
    fine_grained: bool,
    backend: str = "auto",
    upcast: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(L_sim, L_norm) of docs/method.md §5, batch means. ``upcast``: those of ``feature.float()``
    and ``fc_weight.float()`` (the dtypes may then differ), fp32 (module docstring)."""
    _check_alignment_args(feature, fc_weight, target, upcast=upcast)
    return _dispatch("alignment_loss", backend, feature, upcast)(
        feature, fc_weight, target, fg_threshold=fg_threshold, bg_threshold=bg_threshold, fine_grained=fine_grained
    )


def attentive_dropout(
    x: torch.Tensor,
    threshold: float,
    drop_prob: float,
    *,
    uniform: torch.Tensor | None = None,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """(x·keep, keep) of docs/method.md §3; keep is B×1×H×W. ``uniform`` replaces the random draw."""
    _check_feature("x", x)
    if not 0.0 <= drop_prob <= 1.0:
        raise ValueError(f"drop_prob must lie in [0, 1], got {drop_prob}")
    if uniform is not None:
        expected = (x.shape[0], 1, *x.shape[2:])
        if tuple(uniform.shape) != expected:
            raise ValueError(
                f"uniform must have shape {expected} for x shape {tuple(x.shape)}, got {tuple(uniform.shape)}"
            )
        _check_same_device(x=x, uniform=uniform)
    return _dispatch("attentive_dropout", backend, x)(x, threshold, drop_prob, uniform=uniform)


def _check_consistency_args(feature: torch.Tensor, feature_dropped: torch.Tensor) -> None:
    _check_feature("feature", feature)
    _check_feature("feature_dropped", feature_dropped)
    if feature.shape != feature_dropped.shape or feature.dtype != feature_dropped.dtype:
        raise ValueError(
            f"feature {tuple(feature.shape)} {feature.dtype} and feature_dropped "
            f"{tuple(feature_dropped.shape)} {feature_dropped.dtype} must match in shape and dtype"
        )
    _check_same_device(feature=feature, feature_dropped=feature_dropped)


def consistency_loss(
    feature: torch.Tensor, feature_dropped: torch.Tensor, *, backend: str = "auto", upcast: bool = False
) -> torch.Tensor:
    """L_drop = mean |F − F_drop| over all elements (``upcast``: of their fp32 upcasts, fp32)."""
    _check_consistency_args(feature, feature_dropped)
    return _dispatch("consistency_loss", backend, feature, upcast)(feature, feature_dropped)


def feature_losses(
    feature: torch.Tensor, feature_dropped: torch.Tensor, fc_weight: torch.Tensor, target: torch.Tensor, *,
    fg_threshold: float, bg_threshold: float, fine_grained: bool, backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(L_drop, L_sim, L_norm) of ``feature.float()``, ``feature_dropped.float()`` and
    ``fc_weight.float()`` (fp32): the training objective's losses on F. Triton: one op whose backward
    reads F and F_drop once and writes ∂L/∂F once (``fastwsol.kernels.feature_losses``); the other
    backends: ``consistency_loss`` and ``alignment_loss`` on one fp32 copy of F (autograd adds the
    two fp32 gradients, then one cast back), which the Triton op's gradients equal."""
    _check_consistency_args(feature, feature_dropped)
    _check_alignment_args(feature, fc_weight, target, upcast=True)
    thresholds = {"fg_threshold": fg_threshold, "bg_threshold": bg_threshold, "fine_grained": fine_grained}
    resolved = _resolve_backend(backend, feature)
    if resolved == "triton":
        return feature_losses_kernel.feature_losses(feature, feature_dropped, fc_weight, target, **thresholds)
    feature = feature.float()
    loss_drop = _dispatch("consistency_loss", resolved, feature)(feature, feature_dropped.float())
    return loss_drop, *_dispatch("alignment_loss", resolved, feature)(feature, fc_weight.float(), target, **thresholds)


def localization_maps(feature: torch.Tensor, fc_weight: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """{"cam", "norm", "sim"}, each B×H×W, for the target class (docs/method.md §4)."""
    _check_alignment_args(feature, fc_weight, target)
    return reference.localization_maps(feature, fc_weight, target)
