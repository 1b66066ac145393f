"""``report.md`` from check-gpu's report: the verdict, then one table per section in which every
planned row appears (a row that did not pass says so in its status column) with what it is
compared with beside it, then the problems, the warnings and the plan against the time taken."""

from __future__ import annotations

from fastwsol.kernel_cases import TRAIN_STEP_ERROR_FACTOR, TRAIN_STEP_ERROR_FLOOR
from fastwsol.tables import markdown_table


def _number(value, spec: str = ".3g", scale: float = 1.0) -> str:
    return "-" if value is None else format(value * scale, spec)


def _peak(value) -> str:
    """Peak memory in MB; None is a CPU run, where torch's allocator keeps no such count."""
    return "n/a (CPU)" if value is None else f"{value / 1e6:.0f}"


def _status(row: dict) -> str:
    return row["status"]


def _section(report: dict, section: str) -> list[dict]:
    return [r for r in report["rows"] if r["section"] == section]


def _fraction_of_bound(worst: dict | None) -> str:
    """``name: error/bound`` of the worst compared value (≤ 1 passes)."""
    if not worst:
        return "-"
    return f"{worst['name']}: {worst['error'] / worst['bound']:.2f}" if worst["bound"] else f"{worst['name']}: inf"


def _train_table(rows: list[dict]) -> str:
    header = ("row", "status", "model, size, batch", "img/s", "peak MB", "first step s", "graphs (breaks)", "speed-up",
              "gradient error: ours / eager bf16", "worst parameter: error ÷ bound", "worst loss term: error ÷ bound")
    table = []
    for row in rows:
        d, compiles = row.get("details", {}), row.get("compiles", {})
        graphs = f"{compiles['graphs']} ({compiles['graph_breaks']})" if compiles else "-"
        model = f"{d['model']} {d['image_size']}² ×{d['batch']}" if "model" in d else "-"
        table.append((row["name"], _status(row), model, _number(d.get("images_per_s"), ".1f"),
                      _peak(d.get("peak_memory_bytes")) if d else "-", _number(d.get("first_step_s"), ".1f"),
                      graphs, _number(d.get("speedup"), ".2f"),
                      f"{_number(d.get('gradient_error'))} / {_number(d.get('eager_bf16_gradient_error'))}",
                      _fraction_of_bound(d.get("worst_parameter")), _fraction_of_bound(d.get("worst_loss_term"))))
    return markdown_table(header, table)


def _block_table(rows: list[dict]) -> str:
    header = ("row", "status", "paper ms", "ours fp32 ms", "ours bf16-upcast ms", "speed-up fp32",
              "speed-up training path", "peak MB paper / fp32 / bf16", "method")
    table = []
    for row in rows:
        d = row.get("details", {})
        variants = d.get("variants", {})
        times = [_number(variants.get(v, {}).get("ms"), ".3f") for v in ("paper", "ours-fp32", "ours-bf16-upcast")]
        peaks = " / ".join(_peak(variants[v]["peak_bytes"]) for v in variants)
        method = variants.get("paper", {}).get("method", "-")
        table.append((row["name"], _status(row), *times, _number(d.get("speedup_fp32"), ".2f"),
                      _number(d.get("speedup_training_path"), ".2f"), peaks if variants else "-", method))
    return markdown_table(header, table)


def _timing_table(rows: list[dict]) -> str:
    header = ("op", "dir", "shape", "dtype", "status", "measured µs", "floor µs", "measured/floor", "model est. µs",
              "model est./floor", "method")
    table = []
    for row in rows:
        d = row.get("details", {})
        _, op, shape, dtype = row["name"].split(" ")
        directions = d.get("directions") or {"forward": {}, "backward": {}}
        for direction, t in directions.items():
            table.append((op, direction[:3], shape, dtype, _status(row), _number(t.get("measured_us"), ".1f"),
                          _number(t.get("floor_us"), ".1f"), _number(t.get("measured_over_floor"), ".2f"),
                          _number(t.get("model_estimate_us"), ".1f"),
                          _number(t.get("model_estimate_over_floor"), ".2f"), d.get("method", "-")))
    return markdown_table(header, table)


def _ratio_text(errors: dict) -> str:
    """The largest error/bound of a row's compared values (≤ 1 passes) and which."""
    if not errors:
        return "-"
    label = max(errors, key=lambda k: errors[k]["error"] / errors[k]["bound"] if errors[k]["bound"] else float("inf"))
    e = errors[label]
    return f"{label}: {e['error']:.2e} / {e['bound']:.2e}"


def _correctness_table(rows: list[dict]) -> str:
    header = ("row", "status", "worst error / bound", "mask flips: seen / near threshold (expected)", "other checks")
    table = []
    for row in rows:
        d = row.get("details", {})
        flips = d.get("flips")
        flip_text = "-"
        if flips:
            near = flips["near_threshold"]
            flip_text = (f"sim {flips['sim']} / {near['sim']}, norm {flips['norm']} / {near['norm']} "
                         f"({flips['expected']:.2g}); unexplained {flips['unexplained']}")
        others = {k: v for k, v in d.items() if k not in ("op", "shape", "dtype", "layout", "compared_with", "errors",
                                                          "flips", "input_rounding_effect")}
        other_text = "; ".join(f"{k}={_compact(v)}" for k, v in others.items()) or "-"
        table.append((row["name"].removeprefix("correctness "), _status(row), _ratio_text(d.get("errors", {})),
                      flip_text, other_text))
    return markdown_table(header, table)


def _compact(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_compact(v)}" for k, v in value.items()) + "}"
    return str(value).replace("|", "/").replace("\n", " ")


def _evaluator_table(rows: list[dict]) -> str:
    header = ("row", "status", "images", "maps from", "component tree img/s", "OpenCV img/s", "speed-up",
              "counts equal", "max map difference to CPU", "MaxBoxAccV2 (GPU / CPU maps)")
    table = []
    for row in rows:
        d = row.get("details", {})
        evaluators = d.get("evaluators", {})
        tree, opencv, cpu = (evaluators.get(k, {}) for k in ("component_tree", "opencv", "component_tree on CPU maps"))
        table.append((row["name"], _status(row), d.get("images", "-"), d.get("maps_from", "-"),
                      _number(tree.get("images_per_s"), ".0f"), _number(opencv.get("images_per_s"), ".0f"),
                      _number(d.get("speedup_over_opencv"), ".1f"), d.get("counts_equal", "-"),
                      _number(d.get("max_map_difference_to_cpu")),
                      f"{_number(tree.get('max_box_acc_v2'), '.2f')} / {_number(cpu.get('max_box_acc_v2'), '.2f')}"))
    return markdown_table(header, table)


def _simple_table(rows: list[dict], fields: tuple[str, ...]) -> str:
    table = [(row["name"], _status(row), *(_compact(row.get("details", {}).get(f, "-")) for f in fields))
             for row in rows]
    return markdown_table(("row", "status", *fields), table)


def _problems(report: dict) -> list[str]:
    lines = []
    for row in report["rows"]:
        if row["status"] in ("PASS", "NOT RUN"):
            continue
        lines.append(f"- **{row['status']}** {row['name']}: {row.get('reason') or '-'}")
        if row.get("traceback"):
            lines += ["", "  ```", *(f"  {line}" for line in row["traceback"]), "  ```"]
    return lines or ["None."]


def _warnings(report: dict) -> list[str]:
    lines = []
    for row in report["rows"]:
        for w in row.get("warnings", []):
            note = f"known: {w['known']}" if w["known"] else "not known to be harmless"
            lines.append(f"- {row['name']}: {w['category']}: {w['message']} ({w['where']}) — {note}")
        for message in row.get("logs", []):
            lines.append(f"- {row['name']}: compiler log: {message.splitlines()[0]}")
    return lines or ["None."]


def _plan_table(report: dict) -> str:
    table = [(r["name"], r["status"], f"{r['estimate_s']:.1f}", _number(r.get("seconds"), ".1f"),
              r.get("compiles", {}).get("graphs", "-")) for r in report["rows"]]
    return markdown_table(("row", "status", "estimated s", "took s", "graphs compiled"), table)


def format_markdown(report: dict) -> str:
    env, counts = report["environment"], report["counts"]
    estimate = sum(r["estimate_s"] for r in report["rows"])
    sections = {name: _section(report, name) for name in
                ("train_step", "loss_block", "kernel_timing", "correctness", "evaluator", "bandwidth", "dali")}
    return "\n".join([
        f"# fastwsol check-gpu: {report['verdict']}", "",
        ", ".join(f"{count} {status}" for status, count in counts.items() if count), "",
        ", ".join(f"{k} {v}" for k, v in env.items()), "",
        f"Elapsed {report['elapsed_s']:.0f} s of a {env['budget_s']:g} s budget (the plan estimated {estimate:.0f} s, "
        "compiles included).", "",
        "## Training step: ours against the authors' way", "",
        "Each model at its CUB settings (random weights, drop_prob = 1 so the dropped set does not depend on the "
        "draw), one batch. The authors' way: eager fp32 NCHW with the reference ops. Ours: compiled, bf16 "
        "autocast, channels_last, the Triton kernels. Speed-up = ours img/s ÷ the authors'. The compiled row's "
        "first-step gradients are compared with the eager fp32 step's, parameter by parameter (‖Δg‖/‖g‖), "
        f"against {TRAIN_STEP_ERROR_FACTOR:g}× the eager bf16 step's own error + {TRAIN_STEP_ERROR_FLOOR:g}; "
        "the authors' row shows that eager bf16 error (over all parameters).", "",
        _train_table(sections["train_step"]), "",
        "## Loss + dropout block against the paper's formulation", "",
        "Forward + backward of attentive dropout, L_drop and the alignment losses, each called as a training step "
        "calls it. Paper: the eager fp32 reference with the B×C×H×W similarity materialised. Peak: memory "
        "allocated beyond the inputs.", "",
        _block_table(sections["loss_block"]), "",
        "## Kernel timings against the floor", "",
        "Forward and backward (forward + backward − forward) of each op, channels_last. Floor: the least HBM bytes "
        "(fastwsol.kernel_shapes) at the measured copy rate; model: bench/results/roofline.json's estimate for the "
        "same row (H100 datasheet rates).", "",
        _timing_table(sections["kernel_timing"]), "",
        "## Correctness against float64", "",
        "Losses absolute, gradients relative to the largest reference magnitude; bounds from fastwsol.kernel_cases: "
        "the fp32 arithmetic bound plus the rounding of each result to its dtype (2⁻⁸ bf16, 2⁻¹¹ fp16), against the "
        "float64 reference of the values the kernel read. A mask flip is allowed only where the float64 value lies "
        "within the fp32 error bound of its threshold; the losses are then compared with the reference drawn with "
        "the kernel's masks there. bf16-upcast: a bf16 F read as fp32 (the training path).", "",
        _correctness_table(sections["correctness"]), "",
        "## Evaluator on maps made on the GPU", "",
        _evaluator_table(sections["evaluator"]), "",
        "## Copy bandwidth", "",
        _simple_table(sections["bandwidth"], ("gb_per_s", "method")), "",
        "## DALI", "",
        _simple_table(sections["dali"], ("images_per_s", "jpeg")), "",
        "## Problems", "", *_problems(report), "",
        "## Warnings and compiler messages", "", *_warnings(report), "",
        "## Plan", "", _plan_table(report), "",
    ])
