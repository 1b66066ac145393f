"""The two-path WSOL network shared by every backbone (docs/method.md §2).

    F'     = head(x)
    F      = tail(F')                     → logits (GAP → FC), CAM, L_sim, L_norm
    F_drop = tail(AttentiveDrop(F'))      → L_drop only (training only)
"""

from __future__ import annotations

import torch
import torch.nn as nn

from fastwsol import ops


class TwoPathWSOLNet(nn.Module):
    """``head`` → (attentive dropout) → ``tail`` → GAP → ``fc``.

    ``with_dropped_path=False`` gives vanilla CAM (no dropped path at all).
    ``batch_tail_paths``: run both paths through ``tail`` as one concatenated batch, which is
    exact only when ``tail`` has no batch-dependent layer (no BatchNorm); ResNet's BatchNorm
    must see each path's batch separately (impl), so it runs the tail twice.
    """

    def __init__(
        self,
        head: nn.Module,
        tail: nn.Module,
        feature_dim: int,
        num_classes: int,
        *,
        with_dropped_path: bool,
        drop_threshold: float,
        drop_prob: float,
        batch_tail_paths: bool,
        new_layers: tuple[str, ...] = ("fc",),
    ) -> None:
        super().__init__()
        if not 0.0 <= drop_prob <= 1.0:
            raise ValueError(f"drop_prob must lie in [0, 1], got {drop_prob}")
        self.head = head
        self.tail = tail
        self.fc = nn.Linear(feature_dim, num_classes)
        self.feature_dim = feature_dim
        self.num_classes = num_classes
        self.with_dropped_path = with_dropped_path
        self.drop_threshold = drop_threshold
        self.drop_prob = drop_prob
        self.batch_tail_paths = batch_tail_paths
        # module paths of the layers added for WSOL: fresh (unless ResNet50 keeps its pretrained fc)
        # and trained at lr × the new-layer multiplier
        self.new_layers = new_layers
        self.freeze_backbone_bn = False  # set by create_model (model.freeze_backbone_bn)

    def train(self, mode: bool = True):
        """``freeze_backbone_bn``: the pretrained layers' BatchNorm keeps normalising with the
        pretraining's running statistics while training (its scale and shift still learn); the
        new layers' BatchNorm uses batch statistics as usual."""
        super().train(mode)
        if mode and self.freeze_backbone_bn:
            for name, module in self.named_modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm) and not self.is_new_parameter(f"{name}.weight"):
                    module.eval()
        return self

    def classify(self, feature: torch.Tensor) -> torch.Tensor:
        return self.fc(feature.mean(dim=(2, 3)))

    def forward(self, x: torch.Tensor, *, backend: str = "auto") -> dict[str, torch.Tensor]:
        """``backend``: the ``fastwsol.ops`` backend of the attentive dropout (training only), as
        the losses take it."""
        before_drop = self.head(x)
        if not (self.training and self.with_dropped_path):
            feature = self.tail(before_drop)
            return {"logits": self.classify(feature), "feature": feature}
        dropped, _ = ops.attentive_dropout(before_drop, self.drop_threshold, self.drop_prob, backend=backend)
        if self.batch_tail_paths:
            # The cat copies both paths (VGG16-CUB bf16: 2 × 25.7 MB read and written; chunk's backward
            # joins the two 12.8 MB dF): ≈ 0.15 GB a step, ≈ 46 µs at 3.35 TB/s. Kept: one
            # tail pass over 2B images instead of two over B; avoiding the copy would need the head and
            # the dropout to write into one shared buffer. ResNet runs the tail twice: no cat.
            feature, feature_dropped = self.tail(torch.cat([before_drop, dropped])).chunk(2)
        else:
            feature, feature_dropped = self.tail(before_drop), self.tail(dropped)
        return {"logits": self.classify(feature), "feature": feature, "feature_dropped": feature_dropped}

    def is_new_parameter(self, name: str) -> bool:
        return name.startswith(tuple(f"{layer}." for layer in self.new_layers))

    def parameter_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """(backbone, new layers): the new ones train at lr × multiplier (docs/method.md §6)."""
        backbone, new = [], []
        for name, param in self.named_parameters():
            (new if self.is_new_parameter(name) else backbone).append(param)
        return backbone, new


def initialize_weights(modules, init_mode: str) -> None:
    """wsolevaluation's initialisation: convs He (fan_out, ReLU) or Xavier; FC N(0, 0.01); BN 1/0."""
    for m in modules:
        if isinstance(m, nn.Conv2d):
            if init_mode == "he":
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif init_mode == "xavier":
                nn.init.xavier_uniform_(m.weight)
            else:
                raise ValueError(f"init_mode must be 'he' or 'xavier', got {init_mode!r}")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)
