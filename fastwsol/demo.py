"""Smoke demo of the reference path on random data: a tiny two-path model, one training step of
the full objective, and the three localisation maps. (The real main job, training and
evaluating on the synthetic dataset, replaces this when the training issue lands.)"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fastwsol import ops
from fastwsol.models import create_model


def run_demo(seed: int = 0) -> dict[str, float]:
    torch.manual_seed(seed)
    model = create_model("vgg_small", num_classes=5, drop_threshold=0.8, drop_prob=0.5)
    images, labels = torch.randn(4, 3, 112, 112), torch.randint(0, 5, (4,))
    out = model.train()(images)
    loss_sim, loss_norm = ops.alignment_loss(
        out["feature"], model.fc.weight, labels, fg_threshold=0.6, bg_threshold=0.1, fine_grained=True
    )
    terms = {
        "ce": F.cross_entropy(out["logits"], labels),
        "drop": ops.consistency_loss(out["feature"], out["feature_dropped"]),
        "sim": loss_sim,
        "norm": loss_norm,
    }
    total = terms["ce"] + 3.0 * terms["drop"] + 0.5 * terms["sim"] + 0.15 * terms["norm"]
    total.backward()
    maps = ops.localization_maps(out["feature"].detach(), model.fc.weight.detach(), labels)
    print("fastwsol demo (reference path, random data): one step of the full objective")
    for name, value in terms.items():
        print(f"  L_{name:<5} {value.item(): .5f}")
    print(f"  feature {tuple(out['feature'].shape)}; maps " + ", ".join(f"{k} {tuple(v.shape)}" for k, v in maps.items()))
    return {name: value.item() for name, value in terms.items()}
