"""Metrics as text tables (the CLI's output); the numbers themselves come from the evaluator."""

from __future__ import annotations

# (key, label) in print order; keys a result lacks are left out.
METRIC_LABELS = (
    ("pxap", "PxAP"),
    ("piou", "PIoU"),
    ("top1_loc", "Top-1 Loc"),
    ("top5_loc", "Top-5 Loc"),
    ("gt_known_loc", "GT-known Loc"),
    ("max_box_acc_v2", "MaxBoxAccV2"),
    ("gt_known_loc_single", "GT-known Loc, single contour"),
    ("max_box_acc_v2_single", "MaxBoxAccV2, single contour"),
    ("inverted_pct", "inverted maps % (mean in GT < out)"),
    ("peak_in_gt_pct", "maps peaking inside a GT box %"),
    ("top1_cls", "Top-1 Cls"),
    ("top5_cls", "Top-5 Cls"),
    ("best_threshold", "CAM threshold (GT-known-optimal)"),
    ("num_images", "images"),
)


def metric_labels(metrics: dict) -> tuple[tuple[str, str], ...]:
    """:data:`METRIC_LABELS`, the CAM threshold named by what chose it: PIoU on a result scored
    by masks (it holds ``pxap``), GT-known Loc otherwise."""
    if "pxap" not in metrics:
        return METRIC_LABELS
    return tuple((k, "CAM threshold (PIoU-optimal)" if k == "best_threshold" else v) for k, v in METRIC_LABELS)


def format_metrics(metrics: dict, title: str = "metrics") -> str:
    lines = [title]
    for key, label in metric_labels(metrics):
        if key in metrics:
            value = metrics[key]
            lines.append(f"  {label:<34} {value:.2f}" if isinstance(value, float) else f"  {label:<34} {value}")
    box_acc = metrics.get("box_acc")
    if isinstance(box_acc, dict):
        lines.append("  BoxAcc@IoU " + "  ".join(f"{k}: {v:.2f}" for k, v in box_acc.items()))
    return "\n".join(lines)


# One line per metric of the localisation table (docs/protocol.md §5); the CLI prints them under it.
METRIC_EXPLANATIONS = (
    "GT-known Loc: share of images whose box, from the map of the TRUE class, has IoU >= 50 % with a "
    "ground-truth box (classification ignored; the best of the CAM thresholds).",
    "MaxBoxAccV2: the same box accuracy at IoU >= 30, 50 and 70 %, each at its own best CAM threshold, averaged.",
    "Top-1 / Top-5 Loc: GT-known Loc's boxes counted only when the true class is the top-1 / among the top-5 "
    "predictions, read at the CAM threshold that maximises GT-known Loc.",
)

# The same for a dataset localised by masks (OpenImages): pixel-wise scores of the score maps.
MASK_METRIC_EXPLANATIONS = (
    "PxAP: the area under the pixel precision-recall curve of the score maps over all CAM thresholds "
    "(precision and recall of the pixels above a threshold against the GT masks, summed over the split; "
    "pixels of an ignore mask count for neither).",
    "PIoU: the pixel IoU of the pixels above a threshold with the GT masks, at the CAM threshold that maximises it.",
)


def metric_explanations(metrics: dict) -> tuple[str, ...]:
    """The explanations of the metrics ``metrics`` holds: masks' or boxes'."""
    return MASK_METRIC_EXPLANATIONS if "pxap" in metrics else METRIC_EXPLANATIONS


BOX_FORMAT = "boxes are x0,y0,x1,y1 in the original image's pixels (inclusive corners, origin top left)"


def class_label(label: int, names: dict[int, str]) -> str:
    """``red triangle (6)`` when the run's metadata names the class, else ``class 6``."""
    return f"{names[label]} ({label})" if label in names else f"class {label}"


def format_localization(result: dict, names: dict[int, str]) -> str:
    """One ``localize`` result on one line: image, size, box, top classes with scores, picture."""
    x0, y0, x1, y1 = result["box"]
    top = ", ".join(f"{class_label(c['class'], names)} {c['score']:.3f}" for c in result["top_classes"])
    width, height = result["size"]
    line = f"{result['path']} ({width}x{height}): box {x0},{y0},{x1},{y1}; top-{len(result['top_classes'])}: {top}"
    return line + (f"; picture {result['picture']}" if "picture" in result else "")


def threshold_source(epoch: int, threshold_epoch: int | None, given: bool) -> str:
    """Where ``localize``'s threshold comes from: ``--threshold``, or the validation of the run's
    best epoch, which is this checkpoint's epoch for ``best.pt`` but not for ``last.pt``."""
    if given:
        return "from --threshold"
    if threshold_epoch is None:
        return "recorded in the checkpoint"
    if threshold_epoch == epoch:
        return f"validated with this checkpoint, epoch {epoch}"
    return f"validated at epoch {threshold_epoch}, the run's best; this checkpoint is epoch {epoch}"


def format_localization_header(map_kind: str, threshold: float, source: str, named: bool) -> str:
    """The line above ``localize``'s results: what the boxes, threshold, scores and classes are."""
    classes = (
        "class names from the run's metadata" if named else "classes are label numbers (the run's metadata names none)"
    )
    return (
        f"{BOX_FORMAT}; map {map_kind} thresholded at {threshold:.4g} ({source}); "
        f"scores are softmax probabilities; {classes}"
    )


# The columns of ``localize --boxes-csv``: one row per input, a failed one with its error only.
LOCALIZATION_COLUMNS = tuple(
    "file class class_name score x0 y0 x1 y1 width height map threshold error notes".split()
)


def localization_rows(results: list[dict]) -> list[dict]:
    """``localize`` results as :data:`LOCALIZATION_COLUMNS` rows: the top class, its score, the
    box in the original's pixels; ``error`` set (and the rest empty) for a file that failed."""
    rows = []
    for result in results:
        row = dict.fromkeys(LOCALIZATION_COLUMNS, "")
        row["file"] = result["path"]
        if "error" in result:
            row["error"] = result["error"]
        else:
            top = result["top_classes"][0]
            row.update(zip(("x0", "y0", "x1", "y1"), result["box"]))
            row.update(
                {
                    "class": top["class"],
                    "class_name": top.get("name", ""),
                    "score": f"{top['score']:.6f}",
                    "width": result["size"][0],
                    "height": result["size"][1],
                    "map": result["map"],
                    "threshold": result["threshold"],
                    "notes": "; ".join(result.get("notes", ())),
                }
            )
        rows.append(row)
    return rows
