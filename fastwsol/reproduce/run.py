"""Running the reproduction: the synthetic datasets, the pretraining, the fine-tunings of every
variant and seed (each reused or resumed when its recorded config matches), the evaluations the
report needs, then ``results.json``, ``results.md`` and the figure."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from fastwsol.config import load_config
from fastwsol.io import write_text_atomic
from fastwsol.method import MAP_KINDS
from fastwsol.reproduce.figure import comparison_figure
from fastwsol.reproduce.plan import (
    ABLATION,
    DEFAULT_CONFIG,
    DEFAULT_OUT,
    METHOD,
    PRETRAIN_CONFIG,
    PRETRAIN_DATASET,
    PRETRAIN_KEY,
    VANILLA,
    WSOL_DATASET,
    Variant,
)
from fastwsol.reproduce.report import build_summary, report_markdown


def ensure_dataset(config, **make_args) -> None:
    """Generate the synthetic dataset where the config expects it, unless a split is there
    (a dataset of the user's own, e.g. a smaller one, is used as it is; a synthetic set of other
    parameters, or drawn by older code, is named in a note)."""
    from fastwsol.data import ensure_synthetic_dataset
    from fastwsol.data.synthetic import SyntheticSpec, recorded_set_changes

    root = Path(config.data.metadata_root).parent
    if (Path(config.data.metadata_root) / config.data.dataset / "test" / "localization.txt").is_file():
        changes = recorded_set_changes(root, SyntheticSpec(**make_args))
        if changes:  # used as it is, but nobody should mistake it for the default
            print(f"note: {root} holds a synthetic set other than the default ({changes}); "
                  f"using it as it is (remove the folder to generate the default)", flush=True)
        return
    print(f"generating the synthetic dataset in {root} ...", flush=True)
    ensure_synthetic_dataset(root, **make_args)


def _name(run_dir: Path) -> str:
    """``seed1/cam`` for a fine-tuning, ``pretrain`` for the backbone: which run a line is about."""
    return run_dir.name if run_dir.name == PRETRAIN_KEY else f"{run_dir.parent.name}/{run_dir.name}"


def train_run(config_path: Path, run_dir: Path, overrides, label: str, fresh: bool) -> dict:
    """Train one run into ``run_dir`` and return its test metrics. A finished run is reused and
    an interrupted one resumed only when its recorded config (the checkpoint's) matches this
    one; otherwise the differing settings are an error. ``fresh`` retrains (replacing the run)."""
    from fastwsol.checkpoint import changed_keys, describe_changes
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
            print(f"[{_name(run_dir)}] reusing {metrics_file} (same settings)", flush=True)
            return json.loads(metrics_file.read_text())
    resume = recorded is not None and recorded[0].name == "last.pt"
    print(f"[{_name(run_dir)}] {'resuming' if resume else 'training'} {label}: {config.model.name}, "
          f"model.method={config.model.method}", flush=True)
    started = time.perf_counter()
    # no checkpoint to resume from: what is there (a log cut short, a stale best.pt) is replaced
    metrics = Trainer(config, resume=resume, overwrite=not resume).fit()
    metrics["train_seconds"] = time.perf_counter() - started
    write_text_atomic(metrics_file, json.dumps(metrics, indent=2) + "\n")
    return metrics


def seed_dir(out: Path, seed: int) -> Path:
    return out / f"seed{seed}"


def train_variant(variant: Variant, out: Path, seed: int, base_overrides, fresh: bool) -> dict:
    return train_run(DEFAULT_CONFIG, seed_dir(out, seed) / variant.key,
                     [*base_overrides, *variant.overrides, f"train.seed={seed}"], variant.label, fresh)


def evaluate_maps(run_dir: Path) -> dict:
    """Test metrics of the run's best checkpoint with each localisation map (Table 5), written
    again each time (the run's folder is the reproduction's own)."""
    from fastwsol.checkpoint import load_trained
    from fastwsol.evaluate import evaluate_checkpoint

    trained = load_trained(run_dir / "best.pt")
    return {
        kind: evaluate_checkpoint(trained, split="test", map_kind=kind, out_dir=run_dir, overwrite=True)
        for kind in MAP_KINDS
    }


def class_figures(run_dir: Path) -> dict:
    """Per class, on the test split at the run's best checkpoint: GT-known Loc with a single
    contour at the split's GT-known-optimal threshold (so the classes' mean is the split's figure
    when classes are equal in size) and top-1 classification. The maps are those of
    ``evaluate_model``'s pass (its ``on_batch``)."""
    from fastwsol.checkpoint import load_trained
    from fastwsol.data import loader_from_config
    from fastwsol.evaluate import box_evaluator, evaluate_model, gt_boxes_224, locate_data
    from fastwsol.evaluation.diagnostics import per_class_gt_known, per_class_percent
    from fastwsol.evaluation.evaluator import GT_KNOWN_IOU

    trained = load_trained(run_dir / "best.pt")
    config = locate_data(trained)[0]
    loader = loader_from_config(config, "test", batch_size=config.eval.batch_size, device="cpu", train=False)
    evaluator = box_evaluator(config.eval, multi_contour=False)
    row = evaluator.iou_thresholds.index(GT_KNOWN_IOU)
    correct, labels, right = [], [], []

    def per_batch(batch, scoremaps, logits):
        gt = gt_boxes_224(loader.metadata, batch["indices"].cpu().numpy())
        correct.append(evaluator.correct_at_thresholds(scoremaps, gt)[:, row])
        labels.append(batch["labels"].cpu().numpy())
        right.append((logits.argmax(dim=1) == batch["labels"]).cpu().numpy())

    evaluate_model(trained.model, loader, config, on_batch=per_batch)
    labels = np.concatenate(labels)
    classes = trained.model.num_classes
    _, gt_known = per_class_gt_known(np.concatenate(correct), labels, classes)
    top1 = per_class_percent(np.concatenate(right), labels, classes)
    names = [trained.class_names.get(c, str(c)) for c in range(classes)]
    return {"class_names": names, "gt_known_loc_single": gt_known.tolist(), "top1_cls": top1.tolist()}


def reproduce(
    out: str | Path = DEFAULT_OUT,
    *,
    seeds: int = 1,
    ablation: bool = False,
    fresh: bool = False,
    overrides=(),
    pretrain_overrides=(),
) -> dict:
    """``overrides`` apply to every fine-tuning run (``configs/synthetic.yaml``),
    ``pretrain_overrides`` to the pretraining (``configs/synthetic_pretrain.yaml``); ``seeds``
    training seeds (0..seeds-1) per variant, one shared pretrained backbone (the package's docstring).
    The Table-5 maps and the figure are those of seed 0."""
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    started = time.perf_counter()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder")
    ensure_dataset(load_config(PRETRAIN_CONFIG, pretrain_overrides), **PRETRAIN_DATASET)
    ensure_dataset(load_config(DEFAULT_CONFIG, overrides), **WSOL_DATASET)
    new_backbone = fresh or not (out / PRETRAIN_KEY / "test_metrics.json").is_file()
    stage_seconds = {}
    pretrained = train_run(
        PRETRAIN_CONFIG,
        out / PRETRAIN_KEY,
        pretrain_overrides,
        "the backbone on the objects task (the ImageNet stand-in)",
        fresh,
    )
    stage_seconds[PRETRAIN_KEY] = time.perf_counter() - started
    # every fine-tuning starts from the same pretrained backbone (conv6 and fc fresh); a new
    # backbone makes the fine-tuned runs of an older one stale
    overrides = [f"model.init_from={out / PRETRAIN_KEY / 'last.pt'}", *overrides]
    variants = (VANILLA, *(ABLATION if ablation else ()), METHOD)
    seed_list = list(range(seeds))
    results = {v.key: [] for v in variants}
    for seed in seed_list:
        for v in variants:
            t0 = time.perf_counter()
            results[v.key].append(train_variant(v, out, seed, overrides, new_backbone))
            stage_seconds[f"seed{seed}/{v.key}"] = time.perf_counter() - t0
    first = seed_dir(out, seed_list[0])
    t0 = time.perf_counter()
    compared = {"vanilla CAM": VANILLA.key, "method": METHOD.key}
    per_map = {name: evaluate_maps(first / key) for name, key in compared.items()}
    figure = comparison_figure(
        {"vanilla": first / VANILLA.key, "method": first / METHOD.key}, out / "maps_vanilla_vs_method.png"
    )
    per_class = {
        name: [class_figures(seed_dir(out, seed) / key) for seed in seed_list] for name, key in compared.items()
    }
    stage_seconds["maps_and_figure"] = time.perf_counter() - t0
    summary = build_summary(
        overrides=overrides,
        pretrain_overrides=pretrain_overrides,
        seeds=seed_list,
        pretrained=pretrained,
        variants=variants,
        results=results,
        per_map=per_map,
        per_class=per_class,
        figure=figure,
        seconds=time.perf_counter() - started,
        stage_seconds=stage_seconds,
    )
    report = report_markdown(summary)
    write_text_atomic(out / "results.json", json.dumps(summary, indent=2) + "\n")
    write_text_atomic(out / "results.md", report)
    print("\n" + report)
    return summary
