"""The embedded default end to end: the synthetic datasets, a pretrained backbone (the stand-in
for ImageNet: ``configs/synthetic_pretrain.yaml``), then vanilla CAM vs the method (and the
ablation rows of docs/method.md §7) fine-tuned from it, evaluated on the synthetic test split; a table
shaped like the paper's Table 7 (JSON + Markdown) and a figure comparing CAM, F̂ and S (the
paper's Fig. 6).

Every run keeps its folder under ``out``; running again reuses finished runs and resumes
interrupted ones when their recorded config matches (other settings are an error naming them;
``fresh=True`` retrains), so an interrupted reproduction continues where it stopped.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fastwsol.checkpoint import write_text_atomic
from fastwsol.config import config_path, load_config

DEFAULT_CONFIG = config_path("synthetic")
PRETRAIN_CONFIG = config_path("synthetic_pretrain")
# `make-synthetic` arguments of the pretraining set (its config names where it lives)
PRETRAIN_DATASET = {"task": "objects", "classes": 40, "train_per_class": 40, "test_per_class": 5}
PRETRAIN_KEY = "pretrain"
DEFAULT_OUT = Path("runs/reproduce")


@dataclass(frozen=True)
class Variant:
    key: str
    label: str  # the paper's Table 7 row
    overrides: tuple[str, ...]


def _variant(key, label, *, drop: bool, sim: bool, norm: bool) -> Variant:
    """A row of the ablation: which loss terms are on (their λ from the config otherwise 0);
    without L_drop the dropped path is not built at all (the ``_cam`` model)."""
    overrides = []
    if not drop:
        overrides += ["model.name=vgg_small_cam", "loss.lambda_drop=0"]
    if not sim:
        overrides.append("loss.lambda_sim=0")
    if not norm:
        overrides.append("loss.lambda_norm=0")
    if not (drop or sim or norm):
        overrides.append("optim.warm_epochs=0")  # nothing to warm up for
    return Variant(key, label, tuple(overrides))


VANILLA = _variant("cam", "none (vanilla CAM)", drop=False, sim=False, norm=False)
METHOD = _variant("all", "L_drop + L_sim + L_norm (the method)", drop=True, sim=True, norm=True)
ABLATION = (
    _variant("drop", "L_drop", drop=True, sim=False, norm=False),
    _variant("sim", "L_sim", drop=False, sim=True, norm=False),
    _variant("sim_norm", "L_sim + L_norm", drop=False, sim=True, norm=True),
    _variant("drop_sim", "L_drop + L_sim", drop=True, sim=True, norm=False),
)
MAP_KINDS = ("cam", "norm", "sim")


def ensure_dataset(config, **make_args) -> None:
    """Generate the synthetic dataset where the config expects it, unless a split is there
    (a dataset of the user's own, e.g. a smaller one, is used as it is)."""
    from fastwsol.data import ensure_synthetic_dataset

    root = Path(config.data.metadata_root).parent
    if (Path(config.data.metadata_root) / config.data.dataset / "test" / "localization.txt").is_file():
        return
    print(f"generating the synthetic dataset in {root} ...", flush=True)
    ensure_synthetic_dataset(root, **make_args)


def train_run(config_path: Path, run_dir: Path, overrides, label: str, fresh: bool) -> dict:
    """Train one run into ``run_dir`` and return its test metrics. A finished run is reused and
    an interrupted one resumed only when its recorded config (the checkpoint's) matches this
    one; otherwise the differing settings are an error. ``fresh`` retrains (replacing the run)."""
    from fastwsol.config import changed_keys, describe_changes
    from fastwsol.train import Trainer, recorded_checkpoint

    config = load_config(config_path, [*overrides, f"train.out_dir={run_dir}"])
    metrics_file = run_dir / "test_metrics.json"
    recorded = None if fresh else recorded_checkpoint(run_dir)
    if recorded is not None:
        changes = changed_keys(recorded[1]["config"], config.to_dict())
        if changes:
            raise ValueError(f"{run_dir} holds a run with other settings ({describe_changes(changes)}): "
                             f"pass --fresh to retrain it, or give another --out")
        if metrics_file.is_file():
            print(f"[{run_dir.name}] reusing {metrics_file} (same settings)", flush=True)
            return json.loads(metrics_file.read_text())
    resume = recorded is not None and recorded[0].name == "last.pt"
    print(f"[{run_dir.name}] {'resuming' if resume else 'training'} {label}: {config.model.name}", flush=True)
    started = time.perf_counter()
    # no checkpoint to resume from: what is there (a log cut short, a stale best.pt) is replaced
    metrics = Trainer(config, resume=resume, overwrite=not resume).fit()
    metrics["train_seconds"] = time.perf_counter() - started
    write_text_atomic(metrics_file, json.dumps(metrics, indent=2) + "\n")
    return metrics


def train_variant(variant: Variant, out: Path, base_overrides, fresh: bool) -> dict:
    return train_run(DEFAULT_CONFIG, out / variant.key, [*base_overrides, *variant.overrides], variant.label, fresh)


def evaluate_maps(run_dir: Path) -> dict:
    """Test metrics of the run's best checkpoint with each localisation map (Table 5)."""
    from fastwsol.localize import evaluate_checkpoint, load_trained

    trained = load_trained(run_dir / "best.pt")
    return {kind: evaluate_checkpoint(trained, split="test", map_kind=kind, out_dir=run_dir) for kind in MAP_KINDS}


def markdown_table(rows: list[tuple[str, dict]]) -> str:
    lines = [
        "| losses | Top-1 Loc | GT-known Loc | MaxBoxAccV2 (30 / 50 / 70) | MaxBoxAccV2 | Top-1 Cls |",
        "|---|---|---|---|---|---|",
    ]
    for label, m in rows:
        acc = m["box_acc"]
        box = " / ".join(f"{acc[k]:.1f}" for k in sorted(acc, key=int))
        lines.append(f"| {label} | {m['top1_loc']:.2f} | {m['gt_known_loc']:.2f} | {box} | {m['max_box_acc_v2']:.2f} | {m['top1_cls']:.2f} |")
    return "\n".join(lines)


def maps_table(per_map: dict[str, dict[str, dict]]) -> str:
    lines = ["| model | map | Top-1 Loc | GT-known Loc | MaxBoxAccV2 |", "|---|---|---|---|---|"]
    for model, maps in per_map.items():
        for kind, m in maps.items():
            lines.append(f"| {model} | {kind} | {m['top1_loc']:.2f} | {m['gt_known_loc']:.2f} | {m['max_box_acc_v2']:.2f} |")
    return "\n".join(lines)


@torch.no_grad()
def comparison_figure(run_dirs: dict[str, Path], path: Path, num_images: int = 6) -> Path:
    """Rows: test images; columns: the image with its GT box, then CAM, F̂, S of each model."""
    import cv2

    from fastwsol.data import build_loader, normalize_on_device
    from fastwsol.evaluate import gt_boxes_224, scoremaps_for
    from fastwsol.evaluation.boxes import SCOREMAP_SIZE
    from fastwsol.localize import load_trained
    from fastwsol.visualize import GT_COLOUR, contact_sheet, draw_boxes, label, localization_picture, write_png

    models = {name: load_trained(d / "best.pt") for name, d in run_dirs.items()}
    config = next(iter(models.values())).config
    d = config.data
    loader = build_loader(d.data_root, d.metadata_root, d.dataset, "test", train=False, batch_size=256, loader="torch",
                          num_threads=0, image_size=d.image_size, output="uint8")
    # evenly spread over the split, so several classes show
    picks = np.linspace(0, loader.num_samples - 1, num_images).astype(int)
    batch = next(iter(loader))
    images, labels, indices = batch["images"][picks], batch["labels"][picks], batch["indices"][picks].numpy()
    gt = gt_boxes_224(loader.metadata, indices)
    tiles = []
    for i in range(num_images):
        image = cv2.resize(images[i].permute(1, 2, 0).numpy(), (SCOREMAP_SIZE, SCOREMAP_SIZE), interpolation=cv2.INTER_LINEAR)
        tiles.append(label(draw_boxes(image, gt[i], GT_COLOUR), "image + GT"))
        for name, trained in models.items():
            out = trained.model(normalize_on_device(images[i : i + 1]))
            for kind in MAP_KINDS:
                scoremap = scoremaps_for(out["feature"], trained.model.fc.weight, labels[i : i + 1], kind)[0].numpy()
                symbol = {"cam": "CAM", "norm": "norm F^", "sim": "sim S"}[kind]
                tiles.append(label(localization_picture(image, scoremap, gt[i]), f"{name}: {symbol}"))
    columns = 1 + len(models) * len(MAP_KINDS)
    return write_png(path, contact_sheet(tiles, columns=columns, tile=150))


def reproduce(out: str | Path = DEFAULT_OUT, *, ablation: bool = False, fresh: bool = False,
              overrides=(), pretrain_overrides=()) -> dict:
    """``overrides`` apply to every fine-tuning run (``configs/synthetic.yaml``),
    ``pretrain_overrides`` to the pretraining (``configs/synthetic_pretrain.yaml``)."""
    started = time.perf_counter()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder")
    ensure_dataset(load_config(PRETRAIN_CONFIG, pretrain_overrides), **PRETRAIN_DATASET)
    ensure_dataset(load_config(DEFAULT_CONFIG, overrides))
    new_backbone = fresh or not (out / PRETRAIN_KEY / "test_metrics.json").is_file()
    pretrained = train_run(PRETRAIN_CONFIG, out / PRETRAIN_KEY, pretrain_overrides,
                           "the backbone on the objects task (the ImageNet stand-in)", fresh)
    # every fine-tuning starts from the same pretrained backbone (conv6 and fc fresh); a new
    # backbone makes the fine-tuned runs of an older one stale
    overrides = [f"model.init_from={out / PRETRAIN_KEY / 'last.pt'}", *overrides]
    variants = (VANILLA, *(ABLATION if ablation else ()), METHOD)
    results = {v.key: train_variant(v, out, overrides, new_backbone) for v in variants}
    rows = [(v.label, results[v.key]) for v in variants]
    per_map = {name: evaluate_maps(out / key) for name, key in (("vanilla CAM", VANILLA.key), ("method", METHOD.key))}
    figure = comparison_figure({"vanilla": out / VANILLA.key, "method": out / METHOD.key}, out / "maps_vanilla_vs_method.png")
    elapsed = time.perf_counter() - started
    summary = {
        "config": str(DEFAULT_CONFIG),
        "overrides": list(overrides),
        "pretrain": {"config": str(PRETRAIN_CONFIG), "overrides": list(pretrain_overrides), "test": pretrained},
        "variants": {v.key: {"label": v.label, "overrides": list(v.overrides), "test": results[v.key]} for v in variants},
        "maps": per_map,
        "figure": str(figure),
        "seconds": elapsed,
        "note": "Top-1/Top-5 Loc are read at the CAM threshold that maximises GT-known Loc.",
    }
    table = markdown_table(rows)
    report = (
        f"# fastwsol reproduction on the synthetic dataset\n\n"
        f"Config `configs/{DEFAULT_CONFIG.name}`{' with ' + ', '.join(overrides) if overrides else ''}; "
        f"test split, CAM of the ground-truth class; {elapsed / 60:.1f} min on this machine.\n\n"
        f"Every run fine-tunes the backbone pretrained with `configs/{PRETRAIN_CONFIG.name}` "
        f"(objects task, its own test split: top-1 {pretrained['top1_cls']:.1f} %, "
        f"CAM GT-known Loc {pretrained['gt_known_loc']:.1f}).\n\n"
        f"## Losses (paper's Table 7)\n\n{table}\n\n"
        f"## Localisation map (paper's Table 5)\n\n{maps_table(per_map)}\n\n"
        f"Top-1/Top-5 Loc are read at the CAM threshold that maximises GT-known Loc. Figure: `{figure.name}`.\n"
    )
    write_text_atomic(out / "results.json", json.dumps(summary, indent=2) + "\n")
    write_text_atomic(out / "results.md", report)
    print("\n" + report)
    return summary
