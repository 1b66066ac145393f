"""The ``fastwsol`` command line. Each sub-command is one small function; heavy imports stay
inside them so ``fastwsol --help`` is instant."""

from __future__ import annotations

import argparse
import sys

from fastwsol import __version__
from fastwsol.method import MAP_KINDS

# fastwsol.data.synthetic.TASKS, copied so that `--help` does not import OpenCV (a test keeps them equal)
TASK_CHOICES = ("parts", "bodies", "objects")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """argparse's "(default: X)" after an option's help, unless the help already says its
    default or there is none to show (None, off, an empty list)."""

    def _get_help_string(self, action):
        text = action.help or ""
        nothing = (
            action.default is None
            or action.default is False
            or action.default == []
            or action.default == argparse.SUPPRESS
        )
        if "(default" in text or nothing or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


# ---------------------------------------------------------------------------- argument types
# Each names what it accepts, so argparse prints "argument --x: ..." and exits with status 2.


def _device(text: str) -> str:
    """cpu, cuda or cuda:N, and CUDA only where there is one."""
    if text == "cpu":
        return text
    import torch

    try:
        device = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a device; use cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise argparse.ArgumentTypeError(f"{text!r}: fastwsol runs on cpu or cuda (cuda:N)")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(f"{text!r}: CUDA is not available on this machine; use cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise argparse.ArgumentTypeError(
                f"{text!r}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                f"cuda:0 .. cuda:{torch.cuda.device_count() - 1}"
            )
    return text


def _number(text: str, kind, low=None, high=None, what: str = ""):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
    if (low is not None and value < low) or (high is not None and value > high):
        raise argparse.ArgumentTypeError(f"{text!r}: must be {what}")
    return value


def _fraction(text: str) -> float:
    return _number(text, float, 0.0, 1.0, "in [0, 1]")


def _count(text: str) -> int:
    return _number(text, int, 1, None, ">= 1")


def _non_negative_int(text: str) -> int:
    return _number(text, int, 0, None, ">= 0")


def _train(args: argparse.Namespace) -> int:
    from fastwsol.config import load_config
    from fastwsol.train import NonFiniteLossError, Trainer

    overrides = list(args.set)
    if args.no_compile:  # the reference step: eager model and the reference ops
        overrides += ["train.compile=false", "train.backend=reference"]
    if args.out_dir:
        overrides.append(f"train.out_dir={args.out_dir}")
    config = load_config(args.config, overrides, check_files=True)
    try:
        metrics = Trainer(config, resume=args.resume, overwrite=args.overwrite).fit()
    except NonFiniteLossError as exc:
        print(f"fastwsol train: stopped: {exc}", file=sys.stderr)
        return 3
    from fastwsol.report import format_metrics

    print(format_metrics(metrics, title=f"test metrics ({config.train.out_dir})"))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from fastwsol.evaluate import evaluate_checkpoint, load_trained, locate_data
    from fastwsol.report import METRIC_EXPLANATIONS, format_metrics

    trained = load_trained(args.checkpoint, device=args.device)
    config, used = locate_data(trained, data_root=args.data_root, metadata_root=args.metadata_root, overrides=args.set)
    print("data: " + "; ".join(used))
    metrics = evaluate_checkpoint(
        trained, split=args.split, map_kind=args.map, save_maps=args.save_maps, out_dir=args.out, config=config
    )
    print(format_metrics(metrics, title=f"{args.split} split, map={metrics['map']} ({args.checkpoint})"))
    print("\n".join(METRIC_EXPLANATIONS))
    print(f"wrote {metrics['json']}")
    if args.save_maps:
        print(f"pictures: {metrics['pictures']} PNGs (one per image) and contact_sheet.png in {args.save_maps}")
    return 0


def _localize(args: argparse.Namespace) -> int:
    import json

    from fastwsol.evaluate import load_trained
    from fastwsol.localize import localize_images

    trained = load_trained(args.checkpoint, device=args.device)
    results = localize_images(
        trained, args.images, map_kind=args.map, threshold=args.threshold, out_dir=args.out, overwrite=args.overwrite
    )
    from fastwsol.report import BOX_FORMAT, format_localization

    threshold = "validated with the checkpoint" if args.threshold is None else "from --threshold"
    named = (
        "class names from the run's metadata"
        if trained.class_names
        else "classes are label numbers (the run's metadata names none)"
    )
    print(
        f"{BOX_FORMAT}; map {args.map} thresholded at {results[0]['threshold'] if results else '-'} ({threshold}); "
        f"scores are softmax probabilities; {named}"
    )
    failed = 0
    for result in results:
        if "error" in result:
            failed += 1
            print(f"fastwsol localize: error: {result['error']}", file=sys.stderr)
            continue
        print(format_localization(result, trained.class_names))
    if args.json:
        print(json.dumps(results, indent=2))
    return 1 if failed else 0


def _reproduce(args: argparse.Namespace) -> int:
    from fastwsol.reproduce import reproduce

    reproduce(
        args.out,
        seeds=args.seeds,
        ablation=args.ablation,
        fresh=args.fresh,
        overrides=args.set,
        pretrain_overrides=args.pretrain_set,
    )
    return 0


def _make_synthetic(args: argparse.Namespace) -> int:
    from fastwsol.data import make_synthetic_dataset

    paths = make_synthetic_dataset(
        args.out,
        classes=args.classes,
        train_per_class=args.train_per_class,
        test_per_class=args.test_per_class,
        seed=args.seed,
        val_per_class=args.val_per_class,
        task=args.task,
        body_cue=args.body_cue,
        body_groups=args.body_groups,
        overwrite=args.overwrite,
    )
    done = "reused the identical set already in" if paths.reused else "wrote"
    print(
        f"{done} {paths.root}: dataset={paths.dataset} data_root={paths.data_root} metadata_root={paths.metadata_root}"
    )
    return 0


def _prepare(args: argparse.Namespace) -> int:
    from fastwsol.data.prepare import prepare_cub, prepare_imagenet

    common = dict(
        copy=args.copy,
        skip_bad=args.skip_bad,
        metadata_root=args.metadata_root,
        workers=args.workers,
        progress=not args.no_progress,
    )
    if args.dataset == "cub":
        report = prepare_cub(args.cub_dir, args.out, val_dir=args.val, **common)
    else:
        report = prepare_imagenet(args.train, args.val, args.out, val2_dir=args.val2, **common)
    print(report.format(), file=sys.stderr if report.problems else sys.stdout)
    if not report.stopped and not report.conflicts:
        print(
            f"data_root: {args.out}"
            + (f"  metadata_root: {report.out / 'metadata'}" if args.dataset == "imagenet" else "")
        )
    return 1 if report.stopped or report.conflicts else 0


def _add_prepare(sub) -> None:
    prepare = sub.add_parser(
        "prepare",
        help="check your CUB-200-2011 / ImageNet copy against the wsolevaluation metadata and lay it out for training",
        description="Check every image a split lists (exists, readable, the recorded size) and lay the files out as "
        "DATA_ROOT/<DATASET>/<image_id> (symbolic links, or copies with --copy). Missing, unreadable, "
        "wrongly sized and unlisted files are named in a report and give exit status 1; nothing is "
        "laid out then unless --skip-bad. Nothing is ever deleted or overwritten.",
    )
    kinds = prepare.add_subparsers(dest="dataset", metavar="DATASET", required=True)
    kinds.add_parser = _with_formatter(kinds.add_parser)

    def common(parser):
        parser.add_argument(
            "--out",
            required=True,
            metavar="DATA_ROOT",
            help="where to lay the images out (the config's data.data_root)",
        )
        parser.add_argument("--copy", action="store_true", help="copy the files instead of linking them")
        parser.add_argument(
            "--skip-bad",
            action="store_true",
            help="lay out the usable files even when others are missing or unusable (they stay "
            "listed in the val/test metadata: train with --set data.skip_bad=true)",
        )
        parser.add_argument(
            "--metadata-root",
            default="builtin",
            help="wsolevaluation metadata to check against (default: the copy shipped with fastwsol)",
        )
        parser.add_argument("--workers", type=_count, default=8, help="threads reading the files (default: 8)")
        parser.add_argument("--no-progress", action="store_true", help="no progress bar")
        parser.set_defaults(func=_prepare)

    cub = kinds.add_parser(
        "cub",
        help="CUB-200-2011 (+ CUBV2 for the val split)",
        description="Decode every CUB image of the train, val and test splits, compare its size with the metadata, "
        "and lay out DATA_ROOT/CUB/<class>/<file>. Then: fastwsol train --config configs/cub_vgg16.yaml "
        "--set data.data_root=DATA_ROOT",
    )
    cub.add_argument(
        "cub_dir",
        metavar="CUB_200_2011_DIR",
        help="the official archive's CUB_200_2011 folder (or its images/ folder): train and test images",
    )
    cub.add_argument(
        "--val",
        metavar="CUBV2_DIR",
        help="wsolevaluation's CUBV2 images (1,000, a separate download), as <class folder>/<file> like "
        "the metadata's image ids: the val split, used to select checkpoints",
    )
    common(cub)

    imagenet = kinds.add_parser(
        "imagenet",
        help="ImageNet-1K (ILSVRC2012 train + validation, ImageNetV2)",
        description="Write the ILSVRC train metadata from your train folder (label = index of the synset folder in "
        "sorted order, as wsolevaluation and torchvision; sizes from the file headers), check the "
        "ILSVRC2012 validation images (the protocol's test split) and ImageNetV2 (its val split) "
        "against the shipped metadata, and lay out DATA_ROOT/ILSVRC/{train,val,val2}; the complete "
        "metadata root goes to DATA_ROOT/metadata. Files are checked from their headers.",
    )
    imagenet.add_argument("--train", required=True, metavar="TRAIN_DIR", help="ILSVRC2012 train: <wnid>/<file>.JPEG")
    imagenet.add_argument("--val", required=True, metavar="VAL_DIR",
                          help="ILSVRC2012 validation: ILSVRC2012_val_*.JPEG, flat or in <wnid>/ folders")
    imagenet.add_argument("--val2", metavar="VAL2_DIR",
                          help="ImageNetV2 as wsolevaluation's download script lays it out (<class index>/<n>.jpeg, "
                               "10,000 images): its val split, used to select checkpoints")
    common(imagenet)


def _bench(args: argparse.Namespace) -> int:
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]  # `python -m bench.<name>` runs from the repository root
    if not (root / "bench" / "run_all.py").is_file():
        raise FileNotFoundError(
            f"{root / 'bench' / 'run_all.py'} is missing: `fastwsol bench` runs the benchmarks of a source checkout"
        )
    if args.only:  # checked here, so the error is this command's, before anything runs
        listing = [sys.executable, "-c", "from bench.run_all import BENCHMARKS; print(*BENCHMARKS)"]
        names = subprocess.run(listing, cwd=root, stdout=subprocess.PIPE, text=True, check=True).stdout.split()
        unknown = [name for name in args.only if name not in names]
        if unknown:
            raise ValueError(f"--only: unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(names)}")
    flags = (
        ["--quick"] * args.quick
        + ["--summary-only"] * args.summary_only
        + ["--write-summary"] * args.write_summary
        + (["--only", *args.only] if args.only else [])
    )
    return subprocess.run([sys.executable, "-m", "bench.run_all", *flags], cwd=root).returncode


def _with_formatter(add_parser):
    def add(*args, **kwargs):
        return add_parser(*args, formatter_class=_HelpFormatter, **kwargs)

    return add


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastwsol",
        description="Bridging the Gap between Classification and Localization for WSOL (Kim et al., CVPR 2022).",
    )
    parser.add_argument("--version", action="version", version=f"fastwsol {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser = _with_formatter(sub.add_parser)

    synth = sub.add_parser("make-synthetic", help="write the synthetic WSOL dataset (JPEGs + wsolevaluation metadata)")
    synth.add_argument("out", help="output folder: OUT/data/SYNTHETIC/<image_id>, OUT/metadata/SYNTHETIC/<split>/")
    synth.add_argument(
        "--classes",
        type=_count,
        default=10,
        help="number of classes (parts task: at most 40; bodies: 21; objects: 210)",
    )
    synth.add_argument("--train-per-class", type=_count, default=80, help="train images per class")
    synth.add_argument("--test-per-class", type=_count, default=20, help="test images per class")
    synth.add_argument(
        "--val-per-class", type=_count, default=None, help="val images per class (default: --test-per-class)"
    )
    synth.add_argument(
        "--seed", type=_non_negative_int, default=0, help="generation seed (each image has its own RNG from it)"
    )
    synth.add_argument(
        "--task",
        default="parts",
        choices=TASK_CHOICES,
        help="parts: the WSOL set (class = the small part); bodies: its pretraining stand-in "
        "(class = the body's pattern and colours); objects: a pretraining stand-in needing both "
        "(class = body class × one of 10 parts outside the WSOL set's default classes)",
    )
    synth.add_argument(
        "--body-cue",
        type=_fraction,
        default=0.0,
        help="parts task: probability that a body wears its class's tint (a weak class cue); 0 = none",
    )
    synth.add_argument(
        "--body-groups",
        type=_non_negative_int,
        default=0,
        help="parts task: bodies wear their class group's tint (group = class mod N), so the body "
        "tells the group and only the part the class; 0 = one body colour for all",
    )
    synth.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier synthetic set of other parameters in OUT (only its files); "
        "without it such a folder is refused, and so is any non-empty folder without synthetic.json",
    )
    synth.set_defaults(func=_make_synthetic)

    train = sub.add_parser("train", help="train (and validate, test) from a YAML config; torchrun-ready")
    train.add_argument("--config", required=True, help="YAML config (see configs/; every key in fastwsol/config.py)")
    train.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a config value (repeatable), e.g. --set optim.epochs=8",
    )
    train.add_argument("--resume", action="store_true", help="continue from OUT_DIR/last.pt")
    train.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a run already in OUT_DIR (its last.pt, best.pt, test_metrics.json, metrics.jsonl); "
        "without it such a folder is refused",
    )
    train.add_argument(
        "--no-compile",
        action="store_true",
        help="the eager reference step (train.compile=false, train.backend=reference)",
    )
    train.add_argument(
        "--out-dir",
        help="where the run goes: shorthand for --set train.out_dir=... (default: the config's train.out_dir)",
    )
    train.set_defaults(func=_train)

    evaluate = sub.add_parser(
        "evaluate", help="the protocol's metrics of a checkpoint on a split (table + JSON, pictures)"
    )
    evaluate.add_argument(
        "--checkpoint", required=True, help="a fastwsol train checkpoint (RUN/best.pt or RUN/last.pt)"
    )
    evaluate.add_argument("--split", default="test", choices=("train", "val", "test"), help="the split to evaluate")
    evaluate.add_argument(
        "--map", choices=MAP_KINDS, help="localisation map: cam, norm (F̂) or sim (S) (default: the run's eval.map)"
    )
    evaluate.add_argument("--save-maps", metavar="DIR", help="per-image overlay PNGs and a contact sheet")
    evaluate.add_argument(
        "--out", metavar="DIR", help="where metrics_<split>_<map>.json goes (default: the checkpoint's folder)"
    )
    evaluate.add_argument("--device", type=_device, default="cpu", help="cpu, cuda or cuda:N")
    evaluate.add_argument(
        "--data-root",
        metavar="DIR",
        help="the images (DIR/<dataset>/<image_id>) (default: the run's data.data_root, relative "
        "paths taken from the folder the run was trained in)",
    )
    evaluate.add_argument(
        "--metadata-root",
        metavar="DIR",
        help="the metadata (DIR/<dataset>/<split>/, or builtin) (default: the run's data.metadata_root, likewise)",
    )
    evaluate.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override the run's config, e.g. --set data.dataset=CUB or --set eval.batch_size=16",
    )
    evaluate.set_defaults(func=_evaluate)

    localize = sub.add_parser("localize", help="top-5 classes, box and overlay for images of any size")
    localize.add_argument("checkpoint", help="a fastwsol train checkpoint (RUN/best.pt holds the validated threshold)")
    localize.add_argument("images", nargs="+", metavar="IMAGE", help="image files of any size (JPEG, PNG, ...)")
    localize.add_argument(
        "--out",
        metavar="DIR",
        help="write <image>_<map>.png overlays here (images from several folders keep their folders)",
    )
    localize.add_argument(
        "--overwrite", action="store_true", help="replace overlays already in --out (refused otherwise)"
    )
    localize.add_argument("--map", default="cam", choices=MAP_KINDS, help="localisation map: cam, norm (F̂) or sim (S)")
    localize.add_argument(
        "--threshold",
        type=_fraction,
        help="score-map threshold in [0, 1] (default: the one validated with the checkpoint)",
    )
    localize.add_argument("--json", action="store_true", help="also print the results as JSON")
    localize.add_argument("--device", type=_device, default="cpu", help="cpu, cuda or cuda:N")
    localize.set_defaults(func=_localize)

    rep = sub.add_parser(
        "reproduce",
        help="the embedded default: synthetic data, a pretrained backbone, vanilla CAM vs the method fine-tuned "
        "from it, Table-7-style results and a map figure",
    )
    rep.add_argument("--out", default="runs/reproduce", help="runs, results.{json,md} and the figure go here")
    rep.add_argument(
        "--seeds",
        type=_count,
        default=1,
        metavar="N",
        help="fine-tune every variant with training seeds 0..N-1 (one shared backbone and dataset) and "
        "report each seed and the mean ± sd (default: 1)",
    )
    rep.add_argument("--ablation", action="store_true", help="also train the ablation rows (L_drop, L_sim, ...)")
    rep.add_argument(
        "--fresh",
        action="store_true",
        help="retrain every run, replacing what OUT holds (without it a run is reused or resumed "
        "only when its recorded settings match, and refused otherwise)",
    )
    rep.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override configs/synthetic.yaml for every fine-tuning run",
    )
    rep.add_argument(
        "--pretrain-set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override configs/synthetic_pretrain.yaml for the pretraining",
    )
    rep.set_defaults(func=_reproduce)

    _add_prepare(sub)

    bench = sub.add_parser(
        "bench", help="run bench/ (kernels, evaluator, data, training step) and print one summary table"
    )
    bench.add_argument(
        "--quick",
        action="store_true",
        help="smaller sizes, fewer repeats; results go to bench/results/quick/ (git-ignored), never "
        "over the committed full-run results",
    )
    bench.add_argument(
        "--only",
        nargs="+",
        metavar="NAME",
        help="kernels_gpu_build alignment_loss dropout_consistency evaluator data train_step",
    )
    bench.add_argument(
        "--summary-only",
        action="store_true",
        help="print the summary of the saved results (each row names its run) without running or writing anything",
    )
    bench.add_argument(
        "--write-summary", action="store_true", help="with --summary-only: rewrite summary.{json,csv} too"
    )
    bench.set_defaults(func=_bench)

    gpu = sub.add_parser(
        "check-gpu",
        help="prove the Triton kernels on this GPU against the float64 reference at the "
        "real shapes, time them, the training step and DALI; report.json + report.md",
    )
    gpu.add_argument("--out", default="check-gpu", metavar="DIR", help="where report.json and report.md go")
    gpu.add_argument("--quick", action="store_true", help="time one shape, bf16, channels_last, VGG16 only")
    gpu.add_argument(
        "--dry-run", action="store_true", help="the same checks on the CPU at tiny shapes (Triton's interpreter)"
    )
    gpu.add_argument("--force", action="store_true", help="overwrite an existing report in --out")
    gpu.add_argument("--budget-s", type=_count, default=480, help="seconds after which no further timed row starts")
    gpu.set_defaults(func=_check_gpu)
    return parser


def _check_gpu(args: argparse.Namespace) -> int:
    from fastwsol.check_gpu import main as check_gpu

    return check_gpu(args.out, quick=args.quick, dry_run=args.dry_run, force=args.force, budget_s=args.budget_s)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except (ValueError, OSError) as exc:  # user errors (and unreadable/unwritable files): no traceback
        print(f"fastwsol {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"fastwsol {args.command}: interrupted", file=sys.stderr)
        return 130
