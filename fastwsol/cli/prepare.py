"""``fastwsol prepare cub|imagenet|openimages``: check a CUB-200-2011 / ImageNet / OpenImages30k
copy against the wsolevaluation metadata and lay it out for training."""

from __future__ import annotations

import argparse
import sys

from fastwsol.cli.common import count


def add_parser(subparsers) -> None:
    prepare = subparsers.add_parser(
        "prepare",
        help="check your CUB-200-2011 / ImageNet / OpenImages30k copy against the wsolevaluation metadata and lay "
        "it out for training",
        description="Check every image a split lists (exists, readable, the recorded size) and lay the files out as "
        "DATA_ROOT/<DATASET>/<image_id> (symbolic links, or copies with --copy). Missing, unreadable, "
        "wrongly sized and unlisted files are named in a report and give exit status 1; nothing is "
        "laid out then unless --skip-bad. Nothing is ever deleted or overwritten.",
    )
    kinds = prepare.add_subparsers(dest="dataset", metavar="DATASET", required=True)

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
    _add_layout_options(cub)

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
    imagenet.add_argument(
        "--val",
        required=True,
        metavar="VAL_DIR",
        help="ILSVRC2012 validation: ILSVRC2012_val_*.JPEG, flat or in <wnid>/ folders",
    )
    imagenet.add_argument(
        "--val2",
        metavar="VAL2_DIR",
        help="ImageNetV2 as wsolevaluation's download script lays it out (<class index>/<n>.jpeg, "
        "10,000 images): its val split, used to select checkpoints",
    )
    _add_layout_options(imagenet)

    openimages = kinds.add_parser(
        "openimages",
        help="OpenImages30k (wsolevaluation's images and masks)",
        description="Decode every image of the train, val and test splits and every val/test mask and ignore PNG "
        "the metadata lists (a mask must have its image's size), and lay out DATA_ROOT/OpenImages/<split>/"
        "<class>/<file>, the masks beside the images (the mask root is DATA_ROOT).",
    )
    openimages.add_argument(
        "src",
        metavar="OPENIMAGES_DIR",
        help="wsolevaluation's OpenImages_images.zip and OpenImages_annotations.zip unpacked into one folder: "
        "{train,val,test}/<class>/<file> (or a folder holding it as OpenImages/)",
    )
    _add_layout_options(openimages)


def _add_layout_options(parser: argparse.ArgumentParser) -> None:
    """The options every dataset takes: where and how the files are laid out."""
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
    parser.add_argument("--workers", type=count, default=8, help="threads reading the files (default: 8)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fastwsol.data.prepare import prepare_cub, prepare_imagenet, prepare_openimages

    common = dict(
        copy=args.copy,
        skip_bad=args.skip_bad,
        metadata_root=args.metadata_root,
        workers=args.workers,
        progress=not args.no_progress,
    )
    if args.dataset == "cub":
        report = prepare_cub(args.cub_dir, args.out, val_dir=args.val, **common)
    elif args.dataset == "imagenet":
        report = prepare_imagenet(args.train, args.val, args.out, val2_dir=args.val2, **common)
    else:
        report = prepare_openimages(args.src, args.out, **common)
    print(report.format(), file=sys.stderr if report.problems else sys.stdout)
    if not report.stopped and not report.conflicts:
        print(
            f"data_root: {args.out}"
            + (f"  metadata_root: {report.out / 'metadata'}" if args.dataset == "imagenet" else "")
        )
    return 1 if report.stopped or report.conflicts else 0
