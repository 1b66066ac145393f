"""``fastwsol prepare``: check a user's CUB-200-2011, ImageNet or OpenImages30k copy against the
wsolevaluation metadata and lay it out as the loaders read it, ``<data_root>/<DATASET>/<image_id>``
(docs/protocol.md §1).

- CUB: the train and test images come from the official archive's ``CUB_200_2011/images``; the
  val split (CUBV2: 1,000 other images, 5 per class) from wsolevaluation's separate download
  (``--val``). Every image is decoded and its size compared with ``image_sizes.txt``.
- ImageNet: the train metadata is written from the user's ``<train>/<wnid>/*`` (label = the wnid's
  index in sorted order, as in wsolevaluation and torchvision's ``ImageFolder``; sizes from the
  file headers); ``test`` = the 50,000 ILSVRC2012 validation images, flat or in wnid folders, laid
  out as ``val/ILSVRC2012_val_*.JPEG``; ``val`` = ImageNetV2 as ``val2/<class>/<n>.jpeg``.
  ImageNet files are checked from their headers (format, size, end marker), not fully decoded.
- OpenImages30k: wsolevaluation's download (images and masks unpacked into one folder,
  ``{train,val,test}/<class>/<file>``). Every image and every val/test mask and ignore PNG the
  metadata lists is decoded; a mask must have its image's size (the metadata records no sizes).
  Masks are laid out beside the images, ``<data_root>/OpenImages/<mask_path>``.

Missing, unreadable or wrongly sized images and files no split lists are reported by name. Without
``skip_bad`` nothing is laid out when any is found. Nothing is ever deleted or overwritten: a
destination that exists and is not the same file is reported as a conflict; metadata files are
written atomically.
"""

from __future__ import annotations

import filecmp
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from fastwsol.data.images import BadImageError, inspect_image
from fastwsol.data.metadata import (
    CLASS_LABELS,
    IMAGE_IDS,
    IMAGE_SIZES,
    read_split_metadata,
    resolve_metadata_root,
)
from fastwsol.io import write_text_atomic

__all__ = ["PrepareReport", "prepare_cub", "prepare_imagenet", "prepare_openimages"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
CUB_SPLITS = ("train", "val", "test")
OPENIMAGES_SPLITS = ("train", "val", "test")  # train has no masks
# Where each ILSVRC split's images come from (the user's folder) and go (under DATA_ROOT/ILSVRC).
ILSVRC_TEST_PREFIX, ILSVRC_VAL_PREFIX = "val/", "val2/"


@dataclass
class PrepareReport:
    """What one ``prepare`` run found and did; ``problems`` decides the exit status."""

    dataset: str
    out: Path
    checked: int = 0
    masks_checked: int = 0
    laid_out: int = 0
    already_there: int = 0
    missing: list[str] = field(default_factory=list)  # "image_id (expected at path)", masks alike
    bad: list[str] = field(default_factory=list)  # "image_id: reason", masks alike
    extra: list[str] = field(default_factory=list)  # source files no split lists
    conflicts: list[str] = field(default_factory=list)  # destinations that exist and differ
    notes: list[str] = field(default_factory=list)
    stopped: bool = False  # problems found and not skip_bad: nothing laid out

    @property
    def problems(self) -> int:
        return len(self.missing) + len(self.bad) + len(self.extra) + len(self.conflicts)

    def format(self, limit: int = 10) -> str:
        masks = f" and {self.masks_checked} mask(s)" if self.masks_checked else ""
        lines = [f"{self.dataset}: {self.checked} image(s){masks} checked, {self.laid_out} laid out, "
                 f"{self.already_there} already in place under {self.out}"]
        for title, names in (("missing", self.missing), ("unusable", self.bad),
                             ("extra (listed by no split)", self.extra),
                             ("not overwritten (the destination exists and differs)", self.conflicts)):
            if names:
                lines.append(f"{len(names)} {title}:")
                lines += [f"  {name}" for name in names[:limit]]
                if len(names) > limit:
                    lines.append(f"  ... and {len(names) - limit} more (all in the report file)")
        if self.stopped:
            lines.append("nothing was laid out: fix the files above, or pass --skip-bad to lay out the usable "
                         "ones (then train with --set data.skip_bad=true)")
        return "\n".join(lines + self.notes)


def _image_files(root: Path) -> dict[str, Path]:
    """Every non-hidden file under ``root`` by its ``/``-separated relative path."""
    files = {}
    for folder, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if not name.startswith("."):
                path = Path(folder) / name
                files[path.relative_to(root).as_posix()] = path
    return files


def _inspect_all(items, verify: str, workers: int, progress: bool, desc: str):
    """``items`` = [(image_id, path)] → [(image_id, path, ImageInfo | error string)] in order."""
    def one(item):
        image_id, path = item
        try:
            return image_id, path, inspect_image(path, verify, cache=False)
        except BadImageError as exc:
            return image_id, path, str(exc)

    with ThreadPoolExecutor(max(1, workers)) as pool:
        results = pool.map(one, items, chunksize=256)
        return list(tqdm(results, total=len(items), desc=desc, unit="img", disable=not progress, mininterval=1.0))


def _check_listed(report: PrepareReport, listed, verify: str, workers: int, progress: bool, desc: str):
    """Check ``listed`` = [(image_id, source path | None, (width, height) | None)] (None: the
    metadata records no size); returns the usable (image_id, source path) pairs and records the
    rest in ``report``."""
    checked = _check_listed_info(report, listed, verify, workers, progress, desc)
    return [(image_id, path) for image_id, path, _ in checked]


def _check_listed_info(report: PrepareReport, listed, verify: str, workers: int, progress: bool, desc: str):
    """:func:`_check_listed`, returning the usable (image_id, source path, ImageInfo)."""
    missing = [(i, expected) for i, expected, _ in listed if expected is None or not expected.is_file()]
    report.missing += [f"{i} (not found{'' if p is None else f' at {p}'})" for i, p in missing]
    missing_ids = {i for i, _ in missing}
    present = [(i, p, size) for i, p, size in listed if i not in missing_ids]
    sizes = {i: size for i, _, size in present}
    usable = []
    for image_id, path, info in _inspect_all([(i, p) for i, p, _ in present], verify, workers, progress, desc):
        report.checked += 1
        if isinstance(info, str):
            report.bad.append(f"{image_id}: {info}")
        elif sizes[image_id] is not None and (info.width, info.height) != sizes[image_id]:
            width, height = sizes[image_id]
            report.bad.append(f"{image_id}: {path} is {info.width}x{info.height}, the metadata says {width}x{height}")
        else:
            usable.append((image_id, path, info))
    return usable


def _same_file(source: Path, destination: Path) -> bool:
    try:
        if os.path.samefile(source, destination):
            return True
    except OSError:
        return False
    return destination.is_file() and not destination.is_symlink() and filecmp.cmp(source, destination, shallow=False)


def _place(report: PrepareReport, source: Path, destination: Path, copy: bool) -> None:
    """Link (or copy) ``source`` to ``destination``; an existing different file is left alone."""
    if os.path.lexists(destination):
        if _same_file(source, destination):
            report.already_there += 1
        else:
            report.conflicts.append(f"{destination} (would be {source})")
        return
    destination.parent.mkdir(parents=True, exist_ok=True)
    if copy:
        partial = destination.with_name(f".{destination.name}.partial-{os.getpid()}")
        shutil.copy2(source, partial)
        try:
            os.link(partial, destination)  # fails rather than replace a file created meanwhile
        except FileExistsError:
            report.conflicts.append(f"{destination} (appeared while copying {source})")
            return
        except OSError:  # a file system without hard links
            os.replace(partial, destination)
        finally:
            if partial.exists():
                partial.unlink()
    else:
        os.symlink(source.resolve(), destination)
    report.laid_out += 1


def _lay_out(report: PrepareReport, pairs, image_dir: Path, copy: bool) -> None:
    for image_id, source in pairs:
        _place(report, source, image_dir / image_id, copy)


def _write_new_text(report: PrepareReport, path: Path, text: str) -> None:
    """Write ``text`` atomically unless ``path`` already holds something else (kept, reported)."""
    if path.exists():
        if path.read_text(encoding="utf-8") != text:
            report.conflicts.append(f"{path} (exists with other content; remove it to regenerate)")
        return
    write_text_atomic(path, text)


def _write_report_file(report: PrepareReport) -> Path | None:
    if not report.problems:
        return None
    path = report.out / f"prepare-{report.dataset}-report.txt"
    write_text_atomic(path, report.format(limit=10**9) + "\n")
    report.notes.append(f"full list: {path}")
    return path


def _finish(report: PrepareReport, skip_bad: bool, lay_out) -> PrepareReport:
    if report.missing or report.bad or report.extra:
        if not skip_bad:
            report.stopped = True
            _write_report_file(report)
            return report
    lay_out()
    _write_report_file(report)
    return report


def _source_root(path: Path, what: str) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{what} folder not found: {path}")
    return path


def prepare_cub(
    cub_dir,
    out,
    *,
    val_dir=None,
    copy: bool = False,
    skip_bad: bool = False,
    metadata_root="builtin",
    workers: int = 8,
    progress: bool = True,
) -> PrepareReport:
    """Check ``cub_dir`` (the official ``CUB_200_2011`` folder, or its ``images`` folder) and
    ``val_dir`` (CUBV2) against the CUB metadata; lay out ``out/CUB/<image_id>``."""
    cub_dir = _source_root(cub_dir, "CUB_200_2011")
    images = cub_dir / "images" if (cub_dir / "images").is_dir() else cub_dir
    val_root = _source_root(val_dir, "CUBV2 (--val)") if val_dir is not None else None
    report = PrepareReport("CUB", Path(out))
    source_files = _image_files(images)
    val_files = _image_files(val_root) if val_root is not None else {}
    listed, listed_ids = [], set()
    for split in CUB_SPLITS:
        meta = read_split_metadata(metadata_root, "CUB", split, require_localization=False)
        files = val_files if split == "val" else source_files
        for image_id, (width, height) in zip(meta.image_ids, meta.sizes.tolist()):
            listed.append((image_id, files.get(image_id), (width, height)))
            listed_ids.add(image_id)
    if val_root is None:
        report.notes.append("no --val: the val split (CUBV2, wsolevaluation's separate download of 1,000 images, "
                            "used to select checkpoints) is reported missing")
    report.extra += sorted(str(p) for i, p in {**source_files, **val_files}.items() if i not in listed_ids)
    usable = _check_listed(report, listed, "decode", workers, progress, "CUB")
    return _finish(report, skip_bad, lambda: _lay_out(report, usable, report.out / "CUB", copy))


def _class_folders(root: Path) -> list[str]:
    return sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))


def _imagenet_train(report: PrepareReport, train_root: Path, num_classes: int, workers: int, progress: bool):
    """Usable train images [(image_id, path)], their labels and sizes, and the sorted wnids."""
    wnids = _class_folders(train_root)
    if len(wnids) != num_classes:
        raise ValueError(f"{train_root}: {len(wnids)} class folder(s), but the ILSVRC metadata has "
                         f"{num_classes} classes (labels are indices into the sorted folder names)")
    items, labels = [], {}
    for label, wnid in enumerate(wnids):
        for path in sorted((train_root / wnid).iterdir()):
            if path.name.startswith("."):
                continue
            if not path.is_file() or path.suffix.lower() not in IMAGE_SUFFIXES:
                report.extra.append(str(path))
                continue
            image_id = f"train/{wnid}/{path.name}"
            items.append((image_id, path))
            labels[image_id] = label
    report.extra += sorted(str(p) for p in train_root.iterdir() if p.is_file() and not p.name.startswith("."))
    usable, sizes = [], {}
    for image_id, path, info in _inspect_all(items, "header", workers, progress, "ImageNet train"):
        report.checked += 1
        if isinstance(info, str):
            report.bad.append(f"{image_id}: {info}")
        else:
            usable.append((image_id, path))
            sizes[image_id] = (info.width, info.height)
    return usable, labels, sizes, wnids


def _train_metadata_texts(usable, labels, sizes) -> dict[str, str]:
    ids = [i for i, _ in usable]
    return {
        IMAGE_IDS: "".join(f"{i}\n" for i in ids),
        CLASS_LABELS: "".join(f"{i},{labels[i]}\n" for i in ids),
        IMAGE_SIZES: "".join(f"{i},{sizes[i][0]},{sizes[i][1]}\n" for i in ids),
    }


def prepare_imagenet(
    train_dir,
    val_dir,
    out,
    *,
    val2_dir=None,
    copy: bool = False,
    skip_bad: bool = False,
    metadata_root="builtin",
    workers: int = 8,
    progress: bool = True,
) -> PrepareReport:
    """Write ``out/metadata/ILSVRC/{train,val,test}`` and lay out ``out/ILSVRC/{train,val,val2}``.

    ``train_dir``: ``<wnid>/<file>`` folders. ``val_dir``: the ILSVRC2012 validation images, flat
    or in ``<wnid>`` folders (their folder must then be the image's class). ``val2_dir``:
    ImageNetV2 as ``<class index>/<file>``.
    """
    train_root = _source_root(train_dir, "ImageNet train (--train)")
    val_root = _source_root(val_dir, "ILSVRC2012 validation (--val)")
    val2_root = _source_root(val2_dir, "ImageNetV2 (--val2)") if val2_dir is not None else None
    report = PrepareReport("ILSVRC", Path(out))
    test_meta = read_split_metadata(metadata_root, "ILSVRC", "test")
    num_classes = int(test_meta.labels.max()) + 1
    usable_train, labels, sizes, wnids = _imagenet_train(report, train_root, num_classes, workers, progress)

    # test split: ILSVRC2012 validation images found by file name, flat or in wnid folders.
    val_files = _image_files(val_root)
    by_name = {Path(rel).name: (rel, path) for rel, path in val_files.items()}
    listed, listed_names = [], set()
    test_sizes = test_meta.sizes.tolist()
    for image_id, label, (width, height) in zip(test_meta.image_ids, test_meta.labels.tolist(), test_sizes):
        name = image_id[len(ILSVRC_TEST_PREFIX) :]
        listed_names.add(name)
        rel, path = by_name.get(name, (None, None))
        if (
            rel is not None
            and "/" in rel
            and Path(rel).parent.name in wnids
            and wnids.index(Path(rel).parent.name) != label
        ):
            report.bad.append(
                f"{image_id}: found in folder {Path(rel).parent.name} (class "
                f"{wnids.index(Path(rel).parent.name)}), the metadata says class {label}"
            )
            continue
        listed.append((image_id, path, (width, height)))
    report.extra += sorted(str(p) for rel, p in val_files.items() if Path(rel).name not in listed_names)
    usable_test = _check_listed(report, listed, "header", workers, progress, "ILSVRC2012 val")

    usable_val = []
    val_meta = read_split_metadata(metadata_root, "ILSVRC", "val")
    if val2_root is not None:
        val2_files = _image_files(val2_root)
        ids = set()
        listed = []
        for image_id, (width, height) in zip(val_meta.image_ids, val_meta.sizes.tolist()):
            rel = image_id[len(ILSVRC_VAL_PREFIX) :]
            ids.add(rel)
            listed.append((image_id, val2_files.get(rel), (width, height)))
        report.extra += sorted(str(p) for rel, p in val2_files.items() if rel not in ids)
        usable_val = _check_listed(report, listed, "header", workers, progress, "ImageNetV2")
    else:
        report.notes.append(
            "no --val2: the val split (ImageNetV2, used to select checkpoints) is not laid out; "
            "training needs it unless train.eval_interval=0"
        )

    def lay_out():
        image_dir = report.out / "ILSVRC"
        if copy:
            _lay_out(report, usable_train, image_dir, copy=True)
        else:  # one link for the whole train tree: its layout already is train/<wnid>/<file>
            _place(report, train_root, image_dir / "train", copy=False)
            report.notes.append(
                f"train: {image_dir / 'train'} links to {train_root.resolve()} "
                f"({len(usable_train)} images listed in the train metadata)"
            )
        _lay_out(report, usable_test, image_dir, copy)
        _lay_out(report, usable_val, image_dir, copy)
        metadata_dir = report.out / "metadata" / "ILSVRC"
        for name, text in _train_metadata_texts(usable_train, labels, sizes).items():
            _write_new_text(report, metadata_dir / "train" / name, text)
        source = resolve_metadata_root(metadata_root) / "ILSVRC"
        for split in ("val", "test"):
            for path in sorted((source / split).iterdir()):
                _write_new_text(report, metadata_dir / split / path.name, path.read_text(encoding="utf-8"))
        report.notes.append(
            f"metadata root: {report.out / 'metadata'} (train from your files; val and test as wsolevaluation's)"
        )

    return _finish(report, skip_bad, lay_out)


def _openimages_root(src) -> Path:
    """The folder holding ``train/val/test``: ``src`` itself, or its ``OpenImages`` folder."""
    root = _source_root(src, "OpenImages")
    nested = root / "OpenImages"
    if not any((root / split).is_dir() for split in OPENIMAGES_SPLITS) and nested.is_dir():
        return nested
    return root


def _check_masks(report: PrepareReport, masks_of: dict, files: dict, image_info: dict, workers: int, progress: bool):
    """Check every mask file of ``masks_of`` = {image_id: [mask paths]} (found in ``files`` by
    relative path): present, decodable, the size of its image when the image is usable
    (``image_info``). Returns the image ids with a missing or unusable mask."""
    items, owner, failed = [], {}, set()
    for image_id, paths in masks_of.items():
        for relative in paths:
            owner[relative] = image_id
            path = files.get(relative)
            if path is None or not path.is_file():
                where = "" if path is None else f" at {path}"
                report.missing.append(f"{relative} (mask of {image_id}; not found{where})")
                failed.add(image_id)
            else:
                items.append((relative, path))
    for relative, path, info in _inspect_all(items, "decode", workers, progress, "OpenImages masks"):
        report.masks_checked += 1
        image_id = owner[relative]
        image = image_info.get(image_id)
        if isinstance(info, str):
            report.bad.append(f"{relative}: {info}")
        elif image is not None and (info.width, info.height) != (image.width, image.height):
            report.bad.append(f"{relative}: {path} is {info.width}x{info.height}, its image {image_id} is "
                              f"{image.width}x{image.height}")
        else:
            continue
        failed.add(image_id)
    return failed


def prepare_openimages(
    src,
    out,
    *,
    copy: bool = False,
    skip_bad: bool = False,
    metadata_root="builtin",
    workers: int = 8,
    progress: bool = True,
) -> PrepareReport:
    """Check ``src`` (wsolevaluation's OpenImages30k images and masks unpacked into one folder:
    ``{train,val,test}/<class>/<file>``, or a folder holding it as ``OpenImages/``) against the
    OpenImages metadata; lay out ``out/OpenImages/<image_id>`` and ``out/OpenImages/<mask_path>``.

    Files under ``src/{train,val,test}`` that no split lists are reported as extra; other files
    of ``src`` (the downloaded archives, say) are not looked at. An image whose mask is missing or
    unusable is unusable: with ``skip_bad`` neither it nor its masks are laid out.
    """
    root = _openimages_root(src)
    report = PrepareReport("OpenImages", Path(out))
    files = {}
    for split in OPENIMAGES_SPLITS:
        if (root / split).is_dir():
            files.update({f"{split}/{relative}": path for relative, path in _image_files(root / split).items()})
    listed, masks_of = [], {}
    for split in OPENIMAGES_SPLITS:
        meta = read_split_metadata(metadata_root, "OpenImages", split, require_localization=split != "train")
        if split != "train" and meta.localization != "masks":
            raise ValueError(f"{meta.split_dir}: the OpenImages {split} split needs masks in its localization.txt, "
                             f"found {meta.localization}")
        for index, image_id in enumerate(meta.image_ids):
            listed.append((image_id, files.get(image_id), None))  # sizes: none recorded, masks checked against them
            if meta.masks is not None:
                masks_of[image_id] = list(meta.masks[index].files)
    listed_paths = {image_id for image_id, _, _ in listed} | {p for paths in masks_of.values() for p in paths}
    report.extra += sorted(str(path) for relative, path in files.items() if relative not in listed_paths)
    checked = _check_listed_info(report, listed, "decode", workers, progress, "OpenImages")
    image_info = {image_id: info for image_id, _, info in checked}
    failed = _check_masks(report, masks_of, files, image_info, workers, progress)
    usable = []
    for image_id, path, _ in checked:
        if image_id not in failed:
            usable.append((image_id, path))
            usable += [(relative, files[relative]) for relative in masks_of.get(image_id, ())]
    return _finish(report, skip_bad, lambda: _lay_out(report, usable, report.out / "OpenImages", copy))
