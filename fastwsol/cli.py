"""The ``fastwsol`` command line. Each sub-command is one small function; heavy imports stay
inside them so ``fastwsol --help`` is instant."""

from __future__ import annotations

import argparse
import sys

from fastwsol import __version__


def _demo(args: argparse.Namespace) -> int:
    from fastwsol.demo import run_demo

    run_demo(seed=args.seed)
    return 0


def _train(args: argparse.Namespace) -> int:
    from fastwsol.config import load_config
    from fastwsol.train import NonFiniteLossError, Trainer

    overrides = list(args.set)
    if args.no_compile:  # the reference step: eager model and the reference ops
        overrides += ["train.compile=false", "train.backend=reference"]
    if args.out_dir:
        overrides.append(f"train.out_dir={args.out_dir}")
    config = load_config(args.config, overrides)
    try:
        metrics = Trainer(config, resume=args.resume).fit()
    except NonFiniteLossError as exc:
        print(f"fastwsol train: stopped: {exc}", file=sys.stderr)
        return 3
    from fastwsol.report import format_metrics

    print(format_metrics(metrics, title=f"test metrics ({config.train.out_dir})"))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from fastwsol.localize import evaluate_checkpoint, load_trained
    from fastwsol.report import format_metrics

    trained = load_trained(args.checkpoint, device=args.device)
    metrics = evaluate_checkpoint(trained, split=args.split, map_kind=args.map, save_maps=args.save_maps, out_dir=args.out)
    print(format_metrics(metrics, title=f"{args.split} split, map={metrics['map']} ({args.checkpoint})"))
    print("Top-1/Top-5 Loc are read at the CAM threshold that maximises GT-known Loc.")
    return 0


def _localize(args: argparse.Namespace) -> int:
    import json

    from fastwsol.localize import load_trained, localize_images

    trained = load_trained(args.checkpoint, device=args.device)
    results = localize_images(trained, args.images, map_kind=args.map, threshold=args.threshold, out_dir=args.out)
    failed = 0
    for result in results:
        if "error" in result:
            failed += 1
            print(f"fastwsol localize: error: {result['error']}", file=sys.stderr)
            continue
        top = ", ".join(f"{c['class']}:{c['score']:.3f}" for c in result["top_classes"])
        print(f"{result['path']}  box {result['box']}  top-5 [{top}]" + (f"  → {result['picture']}" if "picture" in result else ""))
    if args.json:
        print(json.dumps(results, indent=2))
    return 1 if failed else 0


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _reproduce(args: argparse.Namespace) -> int:
    from fastwsol.reproduce import reproduce

    reproduce(args.out, seeds=args.seeds, ablation=args.ablation, fresh=args.fresh, overrides=args.set, pretrain_overrides=args.pretrain_set)
    return 0


def _make_synthetic(args: argparse.Namespace) -> int:
    from fastwsol.data import make_synthetic_dataset

    paths = make_synthetic_dataset(args.out, classes=args.classes, train_per_class=args.train_per_class,
                                   test_per_class=args.test_per_class, seed=args.seed,
                                   val_per_class=args.val_per_class, task=args.task, body_cue=args.body_cue)
    print(f"wrote {paths.dataset}: data_root={paths.data_root} metadata_root={paths.metadata_root}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    import subprocess
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "bench" / "run_all.py"
    if not script.is_file():
        raise FileNotFoundError(f"{script} is missing: `fastwsol bench` runs the benchmarks of a source checkout")
    flags = ["--quick"] * args.quick + ["--summary-only"] * args.summary_only + (["--only", *args.only] if args.only else [])
    return subprocess.run([sys.executable, str(script), *flags]).returncode


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastwsol",
        description="Bridging the Gap between Classification and Localization for WSOL (Kim et al., CVPR 2022).",
    )
    parser.add_argument("--version", action="version", version=f"fastwsol {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser("demo", help="smoke demo of the reference method on random data (no downloads)")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_demo)

    synth = sub.add_parser("make-synthetic", help="write the synthetic WSOL dataset (JPEGs + wsolevaluation metadata)")
    synth.add_argument("out", help="output folder: OUT/data/SYNTHETIC/<image_id>, OUT/metadata/SYNTHETIC/<split>/")
    synth.add_argument("--classes", type=int, default=10)
    synth.add_argument("--train-per-class", type=int, default=80)
    synth.add_argument("--test-per-class", type=int, default=20)
    synth.add_argument("--val-per-class", type=int, default=None, help="default: --test-per-class")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--task", default="parts",
                       help="parts: the WSOL set (class = the small part); bodies: its pretraining stand-in "
                            "(class = the body's pattern and colours); objects: a pretraining stand-in needing both "
                            "(class = body class × one of 10 parts outside the WSOL set's default classes)")
    synth.add_argument("--body-cue", type=float, default=0.0,
                       help="parts task: probability that a body wears its class's tint (a weak class cue); 0 = none")
    synth.set_defaults(func=_make_synthetic)

    train = sub.add_parser("train", help="train (and validate, test) from a YAML config; torchrun-ready")
    train.add_argument("--config", required=True, help="YAML config (see configs/)")
    train.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a config value")
    train.add_argument("--resume", action="store_true", help="continue from OUT_DIR/last.pt")
    train.add_argument("--no-compile", action="store_true", help="the eager reference step (train.compile=false, train.backend=reference)")
    train.add_argument("--out-dir", help="shorthand for --set train.out_dir=...")
    train.set_defaults(func=_train)

    evaluate = sub.add_parser("evaluate", help="the protocol's metrics of a checkpoint on a split (table + JSON, pictures)")
    evaluate.add_argument("--checkpoint", required=True)
    evaluate.add_argument("--split", default="test", choices=("train", "val", "test"))
    evaluate.add_argument("--map", choices=("cam", "norm", "sim"), help="localisation map (default: the run's eval.map)")
    evaluate.add_argument("--save-maps", metavar="DIR", help="per-image overlay PNGs and a contact sheet")
    evaluate.add_argument("--out", metavar="DIR", help="where metrics_<split>_<map>.json goes (default: the checkpoint's folder)")
    evaluate.add_argument("--device", default="cpu")
    evaluate.set_defaults(func=_evaluate)

    localize = sub.add_parser("localize", help="top-5 classes, box and overlay for images of any size")
    localize.add_argument("checkpoint")
    localize.add_argument("images", nargs="+", metavar="IMAGE")
    localize.add_argument("--out", metavar="DIR", help="write <image>_<map>.png overlays here")
    localize.add_argument("--map", default="cam", choices=("cam", "norm", "sim"))
    localize.add_argument("--threshold", type=float, help="CAM threshold (default: the one validated with the checkpoint)")
    localize.add_argument("--json", action="store_true", help="also print the results as JSON")
    localize.add_argument("--device", default="cpu")
    localize.set_defaults(func=_localize)

    rep = sub.add_parser(
        "reproduce",
        help="the embedded default: synthetic data, a pretrained backbone, vanilla CAM vs the method fine-tuned "
             "from it, Table-7-style results and a map figure",
    )
    rep.add_argument("--out", default="runs/reproduce", help="runs, results.{json,md} and the figure go here")
    rep.add_argument("--seeds", type=_positive_int, default=1, metavar="N",
                     help="fine-tune every variant with training seeds 0..N-1 (one shared backbone and dataset) and "
                          "report each seed and the mean ± sd (default: 1)")
    rep.add_argument("--ablation", action="store_true", help="also train the ablation rows (L_drop, L_sim, ...)")
    rep.add_argument("--fresh", action="store_true", help="retrain runs that already finished")
    rep.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                     help="override configs/synthetic.yaml for every fine-tuning run")
    rep.add_argument("--pretrain-set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                     help="override configs/synthetic_pretrain.yaml for the pretraining")
    rep.set_defaults(func=_reproduce)

    bench = sub.add_parser("bench", help="run bench/ (kernels, evaluator, data, training step) and print one summary table")
    bench.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    bench.add_argument("--only", nargs="+", metavar="NAME", help="kernels_gpu_build alignment_loss dropout_consistency evaluator data train_step")
    bench.add_argument("--summary-only", action="store_true", help="summarise the saved results without running anything")
    bench.set_defaults(func=_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as exc:  # user errors: one clear line, no traceback
        print(f"fastwsol {args.command}: error: {exc}", file=sys.stderr)
        return 2
