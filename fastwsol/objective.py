"""What a run optimises (docs/method.md §2, §5, §7): the method variant, its loss terms, their
weighted sum, and a one-line description printed at the start of a run.

``model.method`` says which objective a config trains, in one place:

- ``bridging_gap`` (the paper): L_CE + λ_drop·L_drop during the ``optim.warm_epochs`` warm epochs,
  then L_CE + λ_drop·L_drop + λ_sim·L_sim + λ_norm·L_norm. An ablation row of the paper's
  Table 7 is this method with some λ = 0; with λ_drop = 0 the dropped path is not built at all
  (it would only feed L_drop).
- ``cam`` (vanilla CAM): L_CE only, no dropped path, no warm stage; the ``loss.lambda_*`` and
  ``optim.warm_epochs`` of the config are not used, so a method config becomes its baseline
  with ``--set model.method=cam``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fastwsol import ops

METHODS = ("bridging_gap", "cam")
LOSS_TERMS = ("ce", "drop", "sim", "norm")


@dataclass(frozen=True)
class Objective:
    """The loss weights and schedule a config trains with, after ``model.method`` is applied."""

    method: str
    lambda_drop: float
    lambda_sim: float
    lambda_norm: float
    warm_epochs: int
    fg_threshold: float
    bg_threshold: float
    fine_grained: bool

    @classmethod
    def from_config(cls, config) -> Objective:
        loss, method = config.loss, config.model.method
        if method not in METHODS:
            raise ValueError(f"model.method: {method!r} is not one of {METHODS}")
        vanilla = method == "cam"
        return cls(
            method=method,
            lambda_drop=0.0 if vanilla else loss.lambda_drop,
            lambda_sim=0.0 if vanilla else loss.lambda_sim,
            lambda_norm=0.0 if vanilla else loss.lambda_norm,
            warm_epochs=0 if vanilla else config.optim.warm_epochs,
            fg_threshold=loss.fg_threshold,
            bg_threshold=loss.bg_threshold,
            fine_grained=loss.fine_grained,
        )

    @property
    def with_dropped_path(self) -> bool:
        """The model builds the dropped path only when L_drop is weighted."""
        return self.lambda_drop > 0

    def unread_settings(self) -> frozenset[str]:
        """The config keys (``section.key``) that do not change what this objective trains: two
        runs that differ only in these are the same run (vanilla CAM reads no ``loss.*``)."""
        unread = set()
        if self.method == "cam":
            unread |= {"loss.lambda_drop", "loss.lambda_sim", "loss.lambda_norm", "optim.warm_epochs"}
        if not self.with_dropped_path:
            unread |= {"model.drop_threshold", "model.drop_prob"}
        if not (self.lambda_sim or self.lambda_norm):  # no alignment loss: its masks' settings unread
            unread |= {"loss.fg_threshold", "loss.bg_threshold", "loss.fine_grained"}
        if not self.warm_epochs:
            unread.add("optim.warm_batch_size")
        return frozenset(unread)

    def is_warm_epoch(self, epoch: int) -> bool:
        return epoch < self.warm_epochs

    def losses(
        self, out: dict[str, torch.Tensor], labels: torch.Tensor, fc_weight: torch.Tensor, *, full: bool, backend: str
    ) -> dict[str, torch.Tensor]:
        """The terms of ``LOSS_TERMS``; L_sim and L_norm only after the warm stage (``full``) and
        when weighted, L_drop only with a dropped path (the others are zeros)."""
        terms = {"ce": F.cross_entropy(out["logits"], labels)}
        zero = terms["ce"].new_zeros(())
        aligned = full and bool(self.lambda_sim or self.lambda_norm)
        thresholds = {"fg_threshold": self.fg_threshold, "bg_threshold": self.bg_threshold,
                      "fine_grained": self.fine_grained}
        if aligned and "feature_dropped" in out:
            # All three on F.float(): with Triton one op whose backward reads F and F_drop once and
            # writes ∂L/∂F once (L_drop's and the alignment's gradients added in fp32, rounded once,
            # as autograd does for one fp32 copy of F; ops.feature_losses).
            terms["drop"], terms["sim"], terms["norm"] = ops.feature_losses(
                out["feature"], out["feature_dropped"], fc_weight, labels, **thresholds, backend=backend)
            return terms
        # The losses of F.float() (fp32) under bf16 autocast. Triton: ``upcast`` — the kernels read
        # the 16-bit F and compute in fp32, so no fp32 copy of F is written and read back; the
        # other backends keep the literal .float().
        upcast = ops.resolve_backend(backend, out["feature"]) == "triton"
        feature = out["feature"] if upcast else out["feature"].float()
        if "feature_dropped" in out:
            terms["drop"] = ops.consistency_loss(
                feature, out["feature_dropped"] if upcast else out["feature_dropped"].float(),
                backend=backend, upcast=upcast,
            )
        else:
            terms["drop"] = zero
        if aligned:
            terms["sim"], terms["norm"] = ops.alignment_loss(
                feature, fc_weight if upcast else fc_weight.float(), labels, **thresholds, backend=backend,
                upcast=upcast,
            )
        else:
            terms["sim"] = terms["norm"] = zero
        return terms

    def total(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        return (
            terms["ce"]
            + self.lambda_drop * terms["drop"]
            + self.lambda_sim * terms["sim"]
            + self.lambda_norm * terms["norm"]
        )

    def describe(self) -> str:
        """The objective in words, e.g. ``L_CE + 3·L_drop for 20 warm epochs, then L_CE + 3·L_drop
        + 0.5·L_sim + 0.15·L_norm``."""
        warm = ["L_CE"] + ([f"{self.lambda_drop:g}·L_drop"] if self.lambda_drop else [])
        weighted = ((self.lambda_sim, "L_sim"), (self.lambda_norm, "L_norm"))
        full = warm + [f"{w:g}·{name}" for w, name in weighted if w]
        text = " + ".join(full)
        if len(full) > len(warm) and self.warm_epochs:
            epochs = "1 warm epoch" if self.warm_epochs == 1 else f"{self.warm_epochs} warm epochs"
            text = f"{' + '.join(warm)} for {epochs}, then {text}"
        if self.method == "cam":
            return f"{text} (vanilla CAM: model.method=cam)"
        if len(full) == 1:
            return f"{text} (model.method=bridging_gap with every λ = 0: the same as vanilla CAM)"
        return text
