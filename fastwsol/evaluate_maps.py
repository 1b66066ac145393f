"""Scoring any method's score maps stored in the benchmark's layout (``fastwsol evaluate-maps``;
docs/evaluate_maps.md).

wsolevaluation's ``evaluation.py`` reads one ``.npy`` per image, ``<scoremap_root>/<image_id>.npy``
(the image id as in ``image_ids.txt``, extension kept: ``test/01226z/7af766bd43da900b.jpg`` →
``<root>/test/01226z/7af766bd43da900b.jpg.npy``), a 2-D float map in [0, 1] compared with the
ground truth resized to 224×224. Here the same maps are scored with fastwsol's evaluators, chosen
by what the split's ``localization.txt`` holds (not by the dataset's name): boxes with
:class:`~fastwsol.evaluation.BoxEvaluator` plus the single-contour metrics and the map diagnostics
that ``fastwsol evaluate`` reports; masks (OpenImages) with :class:`~fastwsol.evaluation.MaskEvaluator`
(PxAP, PIoU), the GT masks read from ``<mask_root>/<dataset>/<mask_path>`` as wsolevaluation's
``--mask_root`` reads them.

Every problem with the maps is a :class:`ScoreMapError` naming the files at fault. Which maps
exist, and each one's shape and dtype (from its ``.npy`` header), and which mask PNGs exist, are
checked before any map is scored; NaN and values outside [0, 1] need the data and are found while scoring, which goes on
to collect every bad map (up to :data:`MAX_BAD_MAPS`) so that one run names them all.
"""

from __future__ import annotations

import json
import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from fastwsol.data.images import missing_mask_files
from fastwsol.data.metadata import BUILTIN, SplitMetadata, read_split_metadata
from fastwsol.evaluate import SINGLE_CONTOUR_KEYS, gt_boxes_224, refuse_to_replace
from fastwsol.evaluation import BoxEvaluator, MapDiagnostics, MaskEvaluator, load_gt_masks
from fastwsol.evaluation.boxes import SCOREMAP_SIZE
from fastwsol.evaluation.scoremap import SCOREMAP_SUFFIX as SUFFIX
from fastwsol.evaluation.scoremap import scoremap_path
from fastwsol.io import check_writable_folder, write_text_atomic
from fastwsol.progress import Progress
from fastwsol.report import metric_labels
from fastwsol.tables import markdown_table

__all__ = [
    "DEFAULT_CAM_CURVE_INTERVAL",
    "MAX_BAD_MAPS",
    "ScoreMapError",
    "check_outputs",
    "evaluate_scoremaps",
    "markdown_report",
    "read_scoremap",
    "result_files",
    "scan_scoremaps",
    "scoremap_path",
    "write_results",
]

# wsolevaluation's config.py --cam_curve_interval (its training-time evaluation and the
# evaluate_wsol function); evaluation.py's own command line defaults to 0.01.
DEFAULT_CAM_CURVE_INTERVAL = 0.001
MAX_BAD_MAPS = 100  # scoring stops once this many maps proved bad: the message names the first few
SHOWN = 5  # paths an error or warning names
BATCH_SIZE = 64
READERS = min(4, os.cpu_count() or 1)


class ScoreMapError(ValueError):
    """The score maps are at fault (missing, unreadable, wrong shape or dtype, NaN, outside
    [0, 1]); the message names the files."""


def _first(paths: Sequence, count: int = SHOWN) -> str:
    shown = ", ".join(str(p) for p in paths[:count])
    return shown + (f" and {len(paths) - count} more" if len(paths) > count else "")


def _map_problem(shape: tuple, dtype: np.dtype) -> str | None:
    """What is wrong with a map of this shape and dtype for the benchmark, or None."""
    if len(shape) != 2:
        return f"a score map must be 2-D (H, W), this one has shape {shape}"
    if shape != (SCOREMAP_SIZE, SCOREMAP_SIZE):
        return (f"shape {shape}: the benchmark compares {SCOREMAP_SIZE}x{SCOREMAP_SIZE} maps with the ground "
                f"truth resized to {SCOREMAP_SIZE}x{SCOREMAP_SIZE}; resize the map to that size")
    if dtype.kind != "f" or dtype.itemsize not in (2, 4, 8):
        return f"dtype {dtype}: a score map holds floats (float16, float32 or float64)"
    return None


def read_header(path: Path) -> str | None:
    """None when ``path`` is a ``.npy`` file whose header announces a valid map, else what is
    wrong (``"missing"`` when there is no file)."""
    try:
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read(handle)
            data_bytes = os.fstat(handle.fileno()).st_size - handle.tell()
    except FileNotFoundError:
        return "missing"
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        return f"not a readable .npy file ({exc})"
    problem = _map_problem(tuple(shape), np.dtype(dtype))
    expected = int(np.prod(shape)) * np.dtype(dtype).itemsize
    if problem is None and data_bytes != expected:
        problem = f"not a readable .npy file ({data_bytes} bytes of data where its header announces {expected})"
    return problem


def read_scoremap(path: str | os.PathLike) -> np.ndarray:
    """One map as float64 (its exact values: docs/evaluate_maps.md on why that is the benchmark's score), after
    the benchmark's checks (util.check_scoremap_validity) and the 224×224 size. A problem is a
    :class:`ScoreMapError` naming ``path``."""
    try:
        scoremap = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise ScoreMapError(f"{path}: missing") from None
    except (OSError, ValueError, EOFError) as exc:
        raise ScoreMapError(f"{path}: not a readable .npy file ({exc})") from None
    if not isinstance(scoremap, np.ndarray):
        raise ScoreMapError(f"{path}: not a .npy file (an archive of several arrays?)")
    problem = _map_problem(scoremap.shape, scoremap.dtype)
    if problem is None:
        scoremap = scoremap.astype(np.float64, copy=False)
        low, high = scoremap.min(), scoremap.max()  # NaN if there is one
        if np.isnan(low) or np.isnan(high):
            problem = f"{int(np.isnan(scoremap).sum())} NaN value(s); a score map must be finite, in [0, 1]"
        elif low < 0 or high > 1:
            problem = f"values in [{low:.6g}, {high:.6g}]; a score map must lie in [0, 1]"
    if problem is not None:
        raise ScoreMapError(f"{path}: {problem}")
    return scoremap


def _npy_files(root: Path) -> set[str]:
    """Every ``.npy`` under ``root``, relative, with ``/`` separators (as image ids are)."""
    found = set()
    for folder, _, names in os.walk(root):
        relative = Path(folder).relative_to(root)
        found.update((relative / name).as_posix() for name in names if name.endswith(SUFFIX))
    return found


def scan_scoremaps(
    root: str | os.PathLike, image_ids: Sequence[str], what: str, *, readers: int = READERS, progress: bool = False
) -> list[str]:
    """Before any map is scored: every image of ``image_ids`` has a map under ``root`` whose
    ``.npy`` header announces a 224×224 float array, else a :class:`ScoreMapError` naming the
    missing or bad files (and, for missing ones, the ``.npy`` files there that no image id
    matches, which usually shows a naming mistake). ``what`` names the split (``CUB/test``).
    Returns warnings: the ``.npy`` files under ``root`` that are not maps of ``image_ids``
    (ignored: a map folder of the whole split scored with a subset's metadata has them)."""
    root = Path(root)
    if not root.is_dir():
        raise ScoreMapError(f"--scoremap-root {root} is not a folder")
    paths = [scoremap_path(root, image_id) for image_id in image_ids]
    bar = Progress(len(paths), "check maps", enabled=progress)
    problems = []
    with ThreadPoolExecutor(readers) as pool:
        for path, problem in zip(paths, pool.map(read_header, paths)):
            if problem is not None:
                problems.append((path, problem))
            bar.update()
    bar.close()
    expected = {image_id + SUFFIX for image_id in image_ids}
    extra = sorted(_npy_files(root) - expected)
    missing = [path for path, problem in problems if problem == "missing"]
    if missing:
        hint = ""
        if extra:
            hint = (f"; {len(extra)} .npy file(s) there match no image id, e.g. {_first(extra, 3)} (the map of "
                    f"image {image_ids[0]!r} must be {scoremap_path(root, image_ids[0])})")
        raise ScoreMapError(
            f"{len(missing)} of {len(paths)} score maps of {what} are missing under {root} (one "
            f"<image_id>{SUFFIX} per image): {_first(missing)}{hint}"
        )
    if problems:
        raise ScoreMapError(
            f"{len(problems)} of {len(paths)} score maps of {what} are not valid: "
            + "; ".join(f"{path}: {problem}" for path, problem in problems[:SHOWN])
            + (f"; and {len(problems) - SHOWN} more" if len(problems) > SHOWN else "")
        )
    if not extra:
        return []
    return [f"{len(extra)} .npy file(s) under {root} are not maps of {what} (ignored), e.g. {_first(extra, 3)}"]


def _read_batch(paths: Sequence[Path]) -> tuple[np.ndarray, list[str]]:
    """(the good maps stacked, bad maps as 'path: problem'); a bad map's slot holds zeros."""
    maps = np.zeros((len(paths), SCOREMAP_SIZE, SCOREMAP_SIZE), np.float64)
    bad = []
    for i, path in enumerate(paths):
        try:
            maps[i] = read_scoremap(path)
        except ScoreMapError as exc:
            bad.append(str(exc))
    return maps, bad


def _batches(count: int, batch_size: int, readers: int, read: Callable) -> Iterator[tuple[int, int, tuple]]:
    """(start, stop, ``read(start, stop)``) over ``range(count)`` in order, read by a pool of
    threads a few batches ahead (np.load and PNG reads wait on the disk, not the interpreter), at
    most ``readers + 1`` batches held at once."""
    starts = iter(range(0, count, batch_size))
    with ThreadPoolExecutor(readers) as pool:
        pending = deque()

        def submit() -> None:
            start = next(starts, None)
            if start is not None:
                stop = min(start + batch_size, count)
                pending.append((start, stop, pool.submit(read, start, stop)))

        for _ in range(readers + 1):
            submit()
        while pending:
            start, stop, future = pending.popleft()
            result = future.result()
            submit()
            yield start, stop, result


def _score(paths: list[Path], read_more: Callable, accumulate: Callable, batch_size: int, readers: int,
           bar: Progress) -> None:
    """The scoring loop: each batch's maps (:func:`_read_batch`) and whatever ``read_more(start,
    stop)`` reads beside them (GT masks) go to ``accumulate(start, stop, maps, more)``. A bad map
    stops the accumulating (nothing will be reported) but not the reading, so that one run names
    every bad map, up to :data:`MAX_BAD_MAPS`."""

    def read(start: int, stop: int) -> tuple:
        return *_read_batch(paths[start:stop]), read_more(start, stop)

    bad: list[str] = []
    for start, stop, (maps, bad_here, more) in _batches(len(paths), batch_size, readers, read):
        bad += bad_here
        if len(bad) >= MAX_BAD_MAPS:
            break
        if not bad:
            accumulate(start, stop, maps, more)
        bar.update(images=stop - start)
    if bad:
        stopped = f" (stopped after {len(bad)}: there may be more)" if len(bad) >= MAX_BAD_MAPS else ""
        raise ScoreMapError(
            f"{len(bad)} of {len(paths)} score maps are not valid{stopped}: " + "; ".join(bad[:SHOWN])
            + (f"; and {len(bad) - SHOWN} more" if len(bad) > SHOWN else "")
        )


def _box_metrics(
    metadata: SplitMetadata,
    paths: list[Path],
    *,
    cam_curve_interval: float,
    iou_thresholds: Sequence[int],
    multi_contour: bool,
    box_backend: str,
    **loop,
) -> dict:
    """The protocol's box metrics of the maps (no Top-1/5 Loc: there is no classifier), the
    single-contour ones (``*_single``) and the map diagnostics, as ``fastwsol evaluate`` reports
    them."""

    def evaluator(multi: bool) -> BoxEvaluator:
        return BoxEvaluator(iou_thresholds, cam_curve_interval, multi_contour=multi, backend=box_backend)

    main, single, diagnostics = evaluator(multi_contour), evaluator(False) if multi_contour else None, MapDiagnostics()

    def accumulate(start: int, stop: int, maps: np.ndarray, _) -> None:
        boxes = gt_boxes_224(metadata, np.arange(start, stop))
        for box_evaluator in (main, single) if single is not None else (main,):
            box_evaluator.accumulate(maps, boxes)
        diagnostics.accumulate(maps, boxes)

    _score(paths, lambda start, stop: None, accumulate, **loop)
    metrics = main.compute()
    single_metrics = single.compute() if single is not None else metrics
    metrics.update({f"{k}_single": single_metrics[k] for k in SINGLE_CONTOUR_KEYS})
    metrics.update(diagnostics.compute())
    return {k: v for k, v in metrics.items() if not k.startswith(("top1_", "top5_"))}


def _mask_metrics(
    metadata: SplitMetadata, paths: list[Path], *, mask_dir: Path, cam_curve_interval: float, mask_backend: str, **loop
) -> dict:
    """PxAP and PIoU of the maps against the GT masks under ``mask_dir``, read with the maps."""
    evaluator = MaskEvaluator(cam_curve_interval, backend=mask_backend)
    _score(
        paths,
        lambda start, stop: load_gt_masks(mask_dir, metadata.masks[start:stop]),
        lambda start, stop, maps, gt_masks: evaluator.accumulate(maps, gt_masks),
        **loop,
    )
    try:
        return evaluator.compute()
    except RuntimeError as exc:  # no foreground pixel, or no map above the lowest threshold
        raise ValueError(f"PxAP of {metadata.split_dir}: {exc}") from None


def check_mask_files(metadata: SplitMetadata, mask_dir: Path, what: str) -> None:
    """Before any map is scored: every instance and ignore PNG the metadata names is under
    ``mask_dir``, else an error counting and naming the missing ones."""
    missing, total = missing_mask_files(metadata.masks, mask_dir)
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} of the {total} mask PNGs of {what} are missing under {mask_dir} "
            f"(--mask-root DIR holds them as DIR/<dataset>/<mask_path>): {_first(missing)}"
        )


def evaluate_scoremaps(
    scoremap_root: str | os.PathLike,
    dataset: str,
    split: str,
    *,
    metadata_root: str | os.PathLike = BUILTIN,
    mask_root: str | os.PathLike | None = None,
    cam_curve_interval: float = DEFAULT_CAM_CURVE_INTERVAL,
    iou_thresholds: Sequence[int] = (30, 50, 70),
    multi_contour: bool = True,
    box_backend: str = "component_tree",
    mask_backend: str = "histogram",
    batch_size: int = BATCH_SIZE,
    readers: int = READERS,
    progress: bool = True,
    warn: Callable[[str], None] | None = None,
) -> dict:
    """The metrics of the maps under ``scoremap_root`` against ``<metadata_root>/<dataset>/<split>``
    (any metadata in the benchmark's layout, e.g. a subset of a split), with the settings that
    produced them. Masks are read from ``<mask_root>/<dataset>/<mask_path>`` (needed when the
    split's localization is masks). ``warn`` receives each warning as well (they are also under
    ``"warnings"``); ``progress``: :class:`~fastwsol.progress.Progress` on stderr. Bad maps:
    :class:`ScoreMapError`; missing or unreadable masks: ``FileNotFoundError``/``ValueError``."""
    metadata = read_split_metadata(metadata_root, dataset, split)
    what = f"{dataset}/{split}"
    kind = metadata.localization
    mask_dir = Path(mask_root) / dataset if mask_root is not None else None
    warnings = []
    if kind == "masks":
        if mask_dir is None:
            raise ValueError(f"the localization of {what} ({metadata.split_dir}) is masks: give --mask-root DIR, "
                             f"the folder that holds them as DIR/{dataset}/<mask_path>")
        check_mask_files(metadata, mask_dir, what)
    elif mask_root is not None:
        warnings.append(f"--mask-root {mask_root} is not used: the localization of {what} is {kind}")
    warnings += scan_scoremaps(scoremap_root, metadata.image_ids, what, readers=readers, progress=progress)
    for line in warnings if warn is not None else ():
        warn(line)
    paths = [scoremap_path(scoremap_root, image_id) for image_id in metadata.image_ids]
    bar = Progress(len(paths), f"evaluate-maps {what}", enabled=progress)
    loop = {"batch_size": batch_size, "readers": readers, "bar": bar}
    if kind == "masks":
        settings = {"cam_curve_interval": float(cam_curve_interval), "mask_root": str(mask_root)}
        metrics = _mask_metrics(metadata, paths, mask_dir=mask_dir, cam_curve_interval=float(cam_curve_interval),
                                mask_backend=mask_backend, **loop)
    else:
        settings = {"cam_curve_interval": float(cam_curve_interval),
                    "iou_thresholds": [int(d) for d in iou_thresholds], "multi_contour": bool(multi_contour)}
        metrics = _box_metrics(metadata, paths, **settings, box_backend=box_backend, **loop)
    bar.close()
    return {"dataset": dataset, "split": split, "localization": kind, "scoremap_root": str(scoremap_root),
            "metadata_root": str(metadata_root), **settings, **metrics, "warnings": warnings}


def result_files(out_dir: str | os.PathLike, dataset: str, split: str) -> tuple[Path, Path]:
    """``<out>/evaluate_maps_<dataset>_<split>.json`` and ``.md``."""
    stem = Path(out_dir) / f"evaluate_maps_{dataset}_{split}"
    return stem.with_suffix(".json"), stem.with_suffix(".md")


def check_outputs(out_dir: str | os.PathLike, dataset: str, split: str, overwrite: bool) -> None:
    """Before any map is read: the results would replace nothing (unless ``overwrite``) and
    ``out_dir`` can be written."""
    refuse_to_replace([("--out", Path(out_dir), list(result_files(out_dir, dataset, split)))], overwrite)
    check_writable_folder(out_dir, "--out")


def markdown_report(result: dict) -> str:
    """The result as a Markdown table (one row per metric) under a line naming what was scored."""
    rows = []
    for key, label in metric_labels(result):
        if result.get(key) is not None:
            value = result[key]
            shown = f"{value:g}" if key == "best_threshold" else f"{value:.2f}" if isinstance(value, float) else value
            rows.append((label, shown))
    for suffix, how in (("", ""), ("_single", ", single contour")):
        for iou, accuracy in (result.get(f"box_acc{suffix}") or {}).items():
            rows.append((f"BoxAcc at IoU {iou} %{how}", f"{accuracy:.2f}"))
    if result["localization"] == "masks":
        against = f"masks of {result['mask_root']}"
    else:
        against = "boxes of " + ("all contours (MaxBoxAccV2)" if result["multi_contour"] else "the largest contour")
    header = (f"Score maps {result['scoremap_root']} on {result['dataset']} {result['split']} "
              f"(metadata {result['metadata_root']}; CAM threshold step {result['cam_curve_interval']:g}; {against})")
    warnings = "".join(f"\nwarning: {line}" for line in result.get("warnings", []))
    return f"{header}\n\n{markdown_table(('metric', 'value'), rows)}\n{warnings}"


def write_results(result: dict, out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Both result files, each written atomically; returns their paths."""
    json_path, md_path = result_files(out_dir, result["dataset"], result["split"])
    write_text_atomic(json_path, json.dumps(result, indent=2) + "\n")
    write_text_atomic(md_path, markdown_report(result).rstrip("\n") + "\n")
    return json_path, md_path
