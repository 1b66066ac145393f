"""Running the reproduction: the synthetic datasets, the pretraining, the fine-tunings of every
variant and seed (each reused or resumed when its recorded config matches), the evaluations the
report needs, then ``results.json``, ``results.md`` and the figure."""

from __future__ import annotations

import json
import os
import shutil
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


def changed_settings(recorded: dict, config) -> tuple[dict, dict]:
    """(the settings that differ between a recorded run's config and ``config`` and make it
    another run, those that differ but neither run's objective reads): vanilla CAM reads no
    ``loss.*`` setting, so another λ_sim leaves a vanilla run as it is."""
    from fastwsol.checkpoint import changed_keys, config_from_dict
    from fastwsol.objective import Objective

    unread = Objective.from_config(config_from_dict(recorded)).unread_settings()
    unread &= Objective.from_config(config).unread_settings()
    changes = changed_keys(recorded, config.to_dict())
    return ({k: v for k, v in changes.items() if k not in unread}, {k: v for k, v in changes.items() if k in unread})


def _finished(run_dir: Path) -> bool:
    return (run_dir / "test_metrics.json").is_file()


def train_run(config_path: Path, run_dir: Path, overrides, label: str, fresh: bool,
              fresh_flag: str = "--fresh") -> dict:
    """Train one run into ``run_dir`` and return its test metrics. A finished run is reused and
    an interrupted one resumed only when its recorded config (the checkpoint's) matches this
    one, settings its objective does not read aside (:func:`changed_settings`); otherwise the
    differing settings are an error naming ``fresh_flag``. ``fresh`` retrains (replacing the run)."""
    from fastwsol.checkpoint import describe_changes
    from fastwsol.train import Trainer, recorded_checkpoint

    config = load_config(config_path, [*overrides, f"train.out_dir={run_dir}"])
    metrics_file = run_dir / "test_metrics.json"
    recorded = None if fresh else recorded_checkpoint(run_dir)
    if recorded is not None:
        changes, unread = changed_settings(recorded[1]["config"], config)
        if changes:
            raise ValueError(f"{run_dir} holds a run with other settings ({describe_changes(changes)}): "
                             f"pass {fresh_flag} to retrain it, or give another --out")
        if metrics_file.is_file():
            unread_note = f"; it does not read {describe_changes(unread)}" if unread else ""
            print(f"[{_name(run_dir)}] reusing {metrics_file} (same settings{unread_note})", flush=True)
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


def finished_backbone_elsewhere(out: Path, config) -> Path | None:
    """A finished pretraining of ``config``'s settings, made from this working directory (so its
    relative data paths name the same data), in the default out or a folder beside ``out``."""
    from fastwsol.train import recorded_checkpoint

    here = (out / PRETRAIN_KEY).resolve()
    candidates = [DEFAULT_OUT / PRETRAIN_KEY, *sorted(out.parent.glob(f"*/{PRETRAIN_KEY}"))]
    for candidate in dict.fromkeys(c.resolve() for c in candidates):
        if candidate == here or not _finished(candidate):
            continue
        try:
            recorded = recorded_checkpoint(candidate)
        except ValueError:  # an unreadable checkpoint is no candidate
            continue
        if (recorded is not None and recorded[1].get("workdir") == os.getcwd()
                and not changed_settings(recorded[1]["config"], config)[0]):
            return candidate
    return None


def pretrain_backbone(out: Path, overrides, fresh: bool) -> tuple[dict, bool]:
    """The pretraining every fine-tuning starts from, in ``out/pretrain``: its test metrics and
    whether the backbone is new there (which makes fine-tunings of an older one stale). A finished
    one there is reused when its settings match (``fresh`` retrains it). Where ``out`` has none,
    a finished one of the same settings in the default out or a folder beside ``out`` is copied
    in rather than retrained."""
    run_dir = out / PRETRAIN_KEY
    new = fresh or not _finished(run_dir)
    if not fresh and not (run_dir.is_dir() and any(run_dir.iterdir())):
        config = load_config(PRETRAIN_CONFIG, [*overrides, f"train.out_dir={run_dir}"])
        source = finished_backbone_elsewhere(out, config)
        if source is not None:
            print(f"[{PRETRAIN_KEY}] copying the pretraining of the same settings from {source}", flush=True)
            copying = out / f".{PRETRAIN_KEY}.copying"  # a copy cut short is never taken for a run
            shutil.rmtree(copying, ignore_errors=True)
            shutil.copytree(source, copying)
            os.replace(copying, run_dir)
    metrics = train_run(PRETRAIN_CONFIG, run_dir, overrides, "the backbone on the objects task (the ImageNet stand-in)",
                        fresh, fresh_flag="--fresh-backbone")
    return metrics, new


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
    fresh_backbone: bool = False,
    overrides=(),
    pretrain_overrides=(),
) -> dict:
    """``overrides`` apply to every fine-tuning run (``configs/synthetic.yaml``),
    ``pretrain_overrides`` to the pretraining (``configs/synthetic_pretrain.yaml``); ``seeds``
    training seeds (0..seeds-1) per variant, one shared pretrained backbone (the package's docstring).
    ``fresh`` retrains the fine-tunings, ``fresh_backbone`` the pretraining and so every run.
    The Table-5 maps and the figure are those of seed 0."""
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    started = time.perf_counter()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder")
    ensure_dataset(load_config(PRETRAIN_CONFIG, pretrain_overrides), **PRETRAIN_DATASET)
    ensure_dataset(load_config(DEFAULT_CONFIG, overrides), **WSOL_DATASET)
    stage_seconds = {}
    pretrained, new_backbone = pretrain_backbone(out, pretrain_overrides, fresh_backbone)
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
            results[v.key].append(train_variant(v, out, seed, overrides, fresh or new_backbone))
            stage_seconds[f"seed{seed}/{v.key}"] = time.perf_counter() - t0
    first = seed_dir(out, seed_list[0])
    t0 = time.perf_counter()
    compared = {"vanilla CAM": VANILLA.key, "method": METHOD.key}
    per_map = {name: evaluate_maps(first / key) for name, key in compared.items()}
    figure = comparison_figure(
        {"vanilla CAM (L_CE only)": first / VANILLA.key,
         "the method (L_CE + L_drop + L_sim + L_norm)": first / METHOD.key},
        out / "maps_vanilla_vs_method.png",
        title="vanilla CAM vs the method",
        seed=seed_list[0],
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
    print(f"results: {out / 'results.md'} (the tables above), {out / 'results.json'} (every number)\n"
          f"figure:  {figure} (vanilla CAM vs the method, seed {seed_list[0]}: CAM, F̂ and S on test images)\n"
          f"runs:    {out}/{PRETRAIN_KEY}, {out}/seed<S>/<variant>", flush=True)
    return summary
