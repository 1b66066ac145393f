"""What the reproduction runs: the two configs, the two synthetic sets, where the runs go, and
the fine-tuned variants (vanilla CAM, the method, the ablation rows of the paper's Table 7)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fastwsol.config import config_path

DEFAULT_CONFIG = config_path("synthetic")
PRETRAIN_CONFIG = config_path("synthetic_pretrain")
# `make-synthetic` arguments of the pretraining set (its config names where it lives)
PRETRAIN_DATASET = {"task": "objects", "classes": 40, "train_per_class": 40, "test_per_class": 5}
PRETRAIN_KEY = "pretrain"
DEFAULT_OUT = Path("runs/reproduce")
# `make-synthetic` arguments of the WSOL set: five classes, one per part colour; the bodies wear
# their group's tint (red/green/yellow, blue/magenta), so the body tells the group and only the part
# the class (docs/experiments.md#which-synthetic-set-shows-the-papers-phenomenon). 100 test images
# per class give a seed's GT-known Loc a standard error of about ±2 points.
WSOL_DATASET = {"classes": 5, "train_per_class": 160, "val_per_class": 40, "test_per_class": 100, "body_groups": 2}


@dataclass(frozen=True)
class Variant:
    key: str
    label: str  # the paper's Table 7 row
    overrides: tuple[str, ...]


def _ablation(key, label, *, drop: bool, sim: bool, norm: bool) -> Variant:
    """A row of the paper's Table 7: the method with the loss terms left out at λ = 0 (without
    L_drop the dropped path is not built: see fastwsol.objective)."""
    off = [f"loss.lambda_{term}=0" for term, on in (("drop", drop), ("sim", sim), ("norm", norm)) if not on]
    return Variant(key, label, tuple(off))


VANILLA = Variant("cam", "none (vanilla CAM)", ("model.method=cam",))
METHOD = Variant("all", "L_drop + L_sim + L_norm (the method)", ("model.method=bridging_gap",))
ABLATION = (
    _ablation("drop", "L_drop", drop=True, sim=False, norm=False),
    _ablation("sim", "L_sim", drop=False, sim=True, norm=False),
    _ablation("sim_norm", "L_sim + L_norm", drop=False, sim=True, norm=True),
    _ablation("drop_sim", "L_drop + L_sim", drop=True, sim=True, norm=False),
)
