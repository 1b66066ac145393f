"""``fastwsol runs``: the training runs in a folder (one line each), or one checkpoint's epoch,
metrics and config."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

CHECKPOINTS = ("last.pt", "best.pt")  # what makes a folder a run here (fastwsol.train.RUN_FILES holds more)
TEST_COLUMNS = (
    ("gt_known_loc", "test GT-known"),
    ("max_box_acc_v2", "test MaxBoxAccV2"),
    ("top1_loc", "test top-1 Loc"),
)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "runs",
        help="list the training runs in a folder, or show a checkpoint's epoch, metrics and config",
        description="A folder: one line per run in it or below it (its epoch, state, best val metric and test "
        "metrics). A checkpoint (RUN/best.pt, RUN/last.pt): its epoch, the best val metric, the val "
        "metrics of its epoch and the test metrics from the run's files, and its config.",
    )
    parser.add_argument("path", nargs="?", default="runs", help="a folder of runs, or a checkpoint file")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    path = Path(args.path)
    if path.is_file():
        print(describe_checkpoint(path))
        return 0
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is neither a folder of runs nor a checkpoint file")
    folders = run_folders(path)
    if not folders:
        print(f"no training runs in {path} (a run is a folder holding last.pt or best.pt)")
        return 0
    print(runs_table(path, folders))
    return 0


def run_folders(root: Path) -> list[Path]:
    """``root`` and every folder below it that holds a checkpoint, sorted."""
    return sorted({p.parent for name in CHECKPOINTS for p in root.rglob(name) if p.is_file()})


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def epoch_records(run_dir: Path) -> dict[int, dict]:
    """metrics.jsonl's end-of-epoch records by epoch (a resumed epoch: its last record)."""
    path = run_dir / "metrics.jsonl"
    records = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("type") == "epoch":
                records[record["epoch"]] = record
    return records


def run_state(state: dict, tested: bool) -> str:
    epochs = state["config"].get("optim", {}).get("epochs")
    if state["epoch"] < (epochs or 0):
        step = f", step {state['step_in_epoch']}" if state.get("step_in_epoch") else ""
        return f"stopped in epoch {state['epoch'] + 1}{step}"
    return "tested" if tested else "trained, not tested"


def describe_best(state: dict) -> str:
    best, metric = state.get("best") or {}, state["config"].get("train", {}).get("select_metric")
    if best.get("epoch") is None:
        return "-"
    return f"{metric} {best['metric']:.2f} (epoch {best['epoch']})"


def runs_table(root: Path, folders: list[Path]) -> str:
    from fastwsol.io import load_checkpoint
    from fastwsol.tables import markdown_table

    rows = []
    for folder in folders:
        name = str(folder.relative_to(root)) if folder != root else str(root)
        checkpoint = next(folder / n for n in CHECKPOINTS if (folder / n).is_file())
        try:
            state = load_checkpoint(checkpoint)
        except ValueError as exc:
            rows.append([name, "-", f"unreadable {checkpoint.name}: {exc}".replace("|", "/"), "-", "-", "-", "-"])
            continue
        test = _read_json(folder / "test_metrics.json")
        epochs = state["config"].get("optim", {}).get("epochs")
        test_cells = [f"{test[key]:.2f}" if test and key in test else "-" for key, _ in TEST_COLUMNS]
        rows.append([name, f"{state['epoch']}/{epochs}", run_state(state, test is not None), describe_best(state),
                     *test_cells])
    header = ["run", "epoch", "state", "best val", *(label for _, label in TEST_COLUMNS)]
    return markdown_table(header, rows)


def describe_checkpoint(path: Path) -> str:
    """A checkpoint's epoch and best, the val metrics of its epoch (metrics.jsonl beside it), the
    test metrics when they are of its epoch (test_metrics.json), and its config as YAML."""
    import yaml

    from fastwsol.io import load_checkpoint
    from fastwsol.report import format_metrics

    state = load_checkpoint(path)
    config, run_dir = state["config"], path.parent
    epochs = config.get("optim", {}).get("epochs")
    test = _read_json(run_dir / "test_metrics.json")
    lines = [
        f"{path}: epoch {state['epoch']} of {epochs} (global step {state.get('global_step', '?')}), "
        f"{config.get('model', {}).get('name')}, model.method={config.get('model', {}).get('method')}; "
        f"{run_state(state, test is not None)}",
        f"best: {describe_best(state)}"
        + (f", CAM threshold {state['best']['threshold']:.3f}" if (state.get("best") or {}).get("threshold") else ""),
    ]
    record = epoch_records(run_dir).get(state["epoch"])
    if record and any(key.startswith("val_") for key in record):
        val = {key.removeprefix("val_"): value for key, value in record.items() if key.startswith("val_")}
        lines.append(format_metrics(val, title=f"val metrics of epoch {state['epoch']} ({run_dir / 'metrics.jsonl'})"))
    if test is not None and test.get("checkpoint_epoch") == state["epoch"]:
        lines.append(format_metrics(test, title=f"test metrics ({run_dir / 'test_metrics.json'})"))
    elif test is not None:
        lines.append(f"test metrics ({run_dir / 'test_metrics.json'}) are of epoch {test.get('checkpoint_epoch')}'s "
                     f"checkpoint, not this one's")
    lines.append("config:")
    lines.append("  " + yaml.safe_dump(config, sort_keys=False).rstrip().replace("\n", "\n  "))
    return "\n".join(lines)
