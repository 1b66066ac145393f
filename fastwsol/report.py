"""Metrics as text tables (the CLI's output); the numbers themselves come from the evaluator."""

from __future__ import annotations

# (key, label) in print order; keys a result lacks are left out.
METRIC_LABELS = (
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


def format_metrics(metrics: dict, title: str = "metrics") -> str:
    lines = [title]
    for key, label in METRIC_LABELS:
        if key in metrics:
            value = metrics[key]
            lines.append(f"  {label:<34} {value:.2f}" if isinstance(value, float) else f"  {label:<34} {value}")
    box_acc = metrics.get("box_acc")
    if isinstance(box_acc, dict):
        lines.append("  BoxAcc@IoU " + "  ".join(f"{k}: {v:.2f}" for k, v in box_acc.items()))
    return "\n".join(lines)
