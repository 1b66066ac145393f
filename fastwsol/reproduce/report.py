"""The reproduction's results as data and as text: the summary (``results.json``) from the runs'
metrics, and the Markdown report (``results.md``) from the summary alone, so that a saved
``results.json`` renders the same report."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fastwsol.reproduce.plan import DEFAULT_CONFIG, METHOD, PRETRAIN_CONFIG, VANILLA, Variant
from fastwsol.tables import markdown_table

# The figures of each run in the results, (key, label): both contour modes and the diagnostics.
RESULT_METRICS = (
    ("gt_known_loc", "GT-known Loc (multi)"),
    ("gt_known_loc_single", "GT-known Loc (single)"),
    ("max_box_acc_v2", "MaxBoxAccV2 (multi)"),
    ("max_box_acc_v2_single", "MaxBoxAccV2 (single)"),
    ("top1_loc", "Top-1 Loc (multi)"),
    ("inverted_pct", "inverted maps %"),
    ("peak_in_gt_pct", "peak in GT %"),
    ("top1_cls", "Top-1 Cls"),
)
# The method − vanilla rows, (key, label): the keys of ``margins``.
MARGIN_LABELS = {"gt_known_loc": "GT-known Loc (multi)", "gt_known_loc_single": "GT-known Loc (single)",
                 "top1_cls": "Top-1 Cls", "inverted_pct_max": "inverted maps %, worse model"}
SUMMARY_NOTE = (
    "Top-1/Top-5 Loc are read at the CAM threshold that maximises GT-known Loc. 'multi': the protocol's "
    "boxes around every contour; 'single': the box of the largest contour. 'inverted': mean score inside "
    "the GT boxes below the mean outside."
)
REPORT_LEGEND = (
    "'multi': the protocol's boxes around every contour (holes included); 'single': the box of the largest "
    "contour; 'inverted': maps whose mean score inside the GT boxes is below the mean outside; "
    "'peak in GT': maps whose maximum lies inside a GT box. Top-1/Top-5 Loc are read at the CAM threshold "
    "that maximises GT-known Loc."
)


def mean_sd(values) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for a single value)."""
    values = np.asarray(values, dtype=np.float64)
    return float(values.mean()), (float(values.std(ddof=1)) if len(values) > 1 else None)


def _cell(mean: float, sd: float | None) -> str:
    return f"{mean:.2f}" if sd is None else f"{mean:.2f} ± {sd:.2f}"


def margins(vanilla: list[dict], method: list[dict]) -> dict:
    """Method − vanilla per seed for the GT-known Loc of both contour modes and top-1, and the
    largest share of inverted maps of either model per seed."""
    result = {key: [m[key] - v[key] for v, m in zip(vanilla, method)]
              for key in ("gt_known_loc", "gt_known_loc_single", "top1_cls")}
    result["inverted_pct_max"] = [max(v["inverted_pct"], m["inverted_pct"]) for v, m in zip(vanilla, method)]
    return result


def build_summary(
    *,
    overrides,
    pretrain_overrides,
    seeds: list[int],
    pretrained: dict,
    variants: tuple[Variant, ...],
    results: dict[str, list[dict]],
    per_map: dict[str, dict[str, dict]],
    per_class: dict[str, list[dict]],
    figure: Path,
    seconds: float,
    stage_seconds: dict[str, float],
) -> dict:
    """The content of ``results.json``: the settings, every run's test metrics (``results``:
    variant key → one dict per seed) with each metric's mean ± sd over the seeds, method − vanilla
    per seed, seed 0's per-map figures, the per-class figures, and the times."""
    fine_tuning = [m["train_seconds"] for runs in results.values() for m in runs]
    diff = margins(results[VANILLA.key], results[METHOD.key])
    return {
        "config": str(DEFAULT_CONFIG),
        "overrides": list(overrides),
        "seeds": seeds,
        "test_images": results[VANILLA.key][0]["num_images"],
        "pretrain": {"config": str(PRETRAIN_CONFIG), "overrides": list(pretrain_overrides), "test": pretrained},
        "variants": {
            v.key: {
                "label": v.label,
                "overrides": list(v.overrides),
                "test": results[v.key],
                "mean_sd": {key: mean_sd([m[key] for m in results[v.key]]) for key, _ in RESULT_METRICS},
            }
            for v in variants
        },
        "method_minus_vanilla": {key: {"per_seed": values, "mean_sd": mean_sd(values)} for key, values in diff.items()},
        "maps": per_map,
        "per_class": per_class,
        "figure": str(figure),
        "seconds": seconds,
        "stage_seconds": stage_seconds,
        "train_seconds": {"pretrain": pretrained["train_seconds"], "fine_tuning": float(np.sum(fine_tuning))},
        "note": SUMMARY_NOTE,
    }


def losses_table(rows: list[tuple[str, list[dict]]]) -> str:
    """One row per variant: each metric's mean ± sd over the seeds' runs."""
    table = [(label, *(_cell(*mean_sd([m[key] for m in runs])) for key, _ in RESULT_METRICS)) for label, runs in rows]
    return markdown_table(("losses", *(label for _, label in RESULT_METRICS)), table)


def seeds_table(seeds, rows: list[tuple[str, list[dict]]]) -> str:
    """Every seed's row of every variant."""
    table = [(seed, label, *(f"{runs[i][key]:.2f}" for key, _ in RESULT_METRICS))
             for i, seed in enumerate(seeds) for label, runs in rows]
    return markdown_table(("seed", "losses", *(label for _, label in RESULT_METRICS)), table)


def margins_table(seeds, diff: dict) -> str:
    """Per row of ``MARGIN_LABELS``: each seed's value and their mean ± sd."""
    table = []
    for key, label in MARGIN_LABELS.items():
        values = (f"{v:.2f}" if key == "inverted_pct_max" else f"{v:+.2f}" for v in diff[key])
        table.append((label, *values, _cell(*mean_sd(diff[key]))))
    return markdown_table(("method − vanilla", *(f"seed {s}" for s in seeds), "mean ± sd"), table)


def class_table(seeds, per_class: dict[str, list[dict]]) -> str:
    """Rows: seed × model; cells: GT-known Loc (single contour) / top-1, per class."""
    names = next(iter(per_class.values()))[0]["class_names"]
    table = [(seed, model, *(f"{g:.0f} / {t:.0f}" for g, t in zip(runs[i]["gt_known_loc_single"], runs[i]["top1_cls"])))
             for i, seed in enumerate(seeds) for model, runs in per_class.items()]
    return markdown_table(("seed", "model", *names), table)


def maps_table(per_map: dict[str, dict[str, dict]]) -> str:
    """Rows: model × localisation map (paper's Table 5)."""
    table = [(model, kind, f"{m['top1_loc']:.2f}", f"{m['gt_known_loc']:.2f} / {m['gt_known_loc_single']:.2f}",
              f"{m['max_box_acc_v2']:.2f} / {m['max_box_acc_v2_single']:.2f}", f"{m['inverted_pct']:.1f}")
             for model, maps in per_map.items() for kind, m in maps.items()]
    header = ("model", "map", "Top-1 Loc", "GT-known Loc (multi / single)", "MaxBoxAccV2 (multi / single)",
              "inverted %")
    return markdown_table(header, table)


def report_markdown(summary: dict) -> str:
    """``results.md`` from a summary (``build_summary``'s, or a ``results.json`` read back)."""
    from fastwsol.train import plural

    seeds, overrides, pretrained = summary["seeds"], summary["overrides"], summary["pretrain"]["test"]
    variants = summary["variants"].values()
    rows = [(v["label"], v["test"]) for v in variants]
    fine_tunings = sum(len(v["test"]) for v in variants)
    diff = {key: margin["per_seed"] for key, margin in summary["method_minus_vanilla"].items()}
    train_seconds = summary["train_seconds"]
    seeds_text = "training seed 0" if len(seeds) == 1 else f"training seeds {', '.join(map(str, seeds))} (mean ± sd)"
    settings = (
        f"Config `configs/{Path(summary['config']).name}`{' with ' + ', '.join(overrides) if overrides else ''}; "
        f"test split ({summary['test_images']} images), CAM of the ground-truth class, {seeds_text}; "
        f"{summary['seconds'] / 60:.1f} min on this machine for this call; training time as the runs recorded it: "
        f"pretraining {train_seconds['pretrain'] / 60:.1f} min, {plural(fine_tunings, 'fine-tuning')} "
        f"{train_seconds['fine_tuning'] / 60:.1f} min."
    )
    backbone = (
        f"Every run fine-tunes the one backbone pretrained with `configs/{Path(summary['pretrain']['config']).name}` "
        f"(objects task, its own test split: top-1 {pretrained['top1_cls']:.1f} %, "
        f"CAM GT-known Loc {pretrained['gt_known_loc']:.1f})."
    )
    every_seed = ["## Every seed", seeds_table(seeds, rows)] if len(seeds) > 1 else []
    parts = [
        "# fastwsol reproduction on the synthetic dataset", settings, backbone, REPORT_LEGEND,
        "## Losses (paper's Table 7)", losses_table(rows),
        "## Method − vanilla CAM", margins_table(seeds, diff),
        *every_seed,
        "## Per class (GT-known Loc with a single contour at the split's optimal threshold / top-1)",
        "A split-level margin can come from a few classes only.", class_table(seeds, summary["per_class"]),
        f"## Localisation map (paper's Table 5), seed {seeds[0]}", maps_table(summary["maps"]),
        f"Figure (seed {seeds[0]}): `{Path(summary['figure']).name}`.",
    ]
    return "\n\n".join(parts) + "\n"
