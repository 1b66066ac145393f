"""Experiment configuration: plain dataclasses with every default visible here, loaded from
YAML and overridden with ``--set section.key=value``. Validation names the key at fault."""

from __future__ import annotations

import dataclasses
import math
import os
import re
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

# The choices of each enumerated setting. The modules that act on a value keep their own tuple
# (fastwsol.models.MODEL_NAMES, ...); tests/test_config.py checks each equals its type here, so
# this leaf imports none of them.
ModelName = Literal["resnet50", "vgg16", "vgg_small", "vgg_small_nobn"]
Method = Literal["bridging_gap", "cam"]  # the paper's losses | vanilla CAM (fastwsol.objective)
Loader = Literal["auto", "dali", "torch"]
Precision = Literal["fp32", "bf16"]
Backend = Literal["auto", "reference", "compiled", "triton"]  # fastwsol.ops backends
MapKind = Literal["cam", "norm", "sim"]  # docs/method.md Table 5
# val metrics a run may select its best checkpoint by (the evaluator's keys); "_single": the box
# of the largest contour only; pxap, piou: a dataset with GT masks (OpenImages)
SelectMetric = Literal[
    "max_box_acc_v2", "gt_known_loc", "top1_loc", "max_box_acc_v2_single", "gt_known_loc_single", "top1_loc_single",
    "pxap", "piou",
]
MASK_SELECT_METRICS = ("pxap", "piou")  # the others are box metrics
# wsolevaluation's datasets by their ground truth; any other dataset's is known from its metadata only
DATASET_LOCALIZATION = {"CUB": "boxes", "ILSVRC": "boxes", "OpenImages": "masks"}


def select_metric_problem(metric: str, localization: str | None, where: str) -> str | None:
    """Why ``train.select_metric`` cannot score a dataset whose ground truth is ``localization``
    ("boxes" or "masks"; ``where`` says how that is known), or ``None`` when it can."""
    if localization not in ("boxes", "masks") or (metric in MASK_SELECT_METRICS) == (localization == "masks"):
        return None
    fits = [m for m in typing.get_args(SelectMetric) if (m in MASK_SELECT_METRICS) == (localization == "masks")]
    return (
        f"train.select_metric: {metric!r} is a {'mask' if metric in MASK_SELECT_METRICS else 'box'} metric, but "
        f"{where} is localised by {localization}: choose one of {fits}"
    )


@dataclass
class DataConfig:
    dataset: str = "SYNTHETIC"  # folder name under data_root / metadata_root (CUB, ILSVRC, ...)
    data_root: str = "data/synthetic/images"  # <data_root>/<dataset>/<image_id>
    metadata_root: str = "data/synthetic/metadata"  # <metadata_root>/<dataset>/<split>/*.txt
    image_size: int = 224  # train crop / eval resize
    resize_size: int = 256  # train: resize to this square, then random crop image_size
    loader: Loader = "auto"
    num_threads: int = 2
    skip_bad: bool = False


@dataclass
class ModelConfig:
    name: ModelName = "vgg16"
    method: Method = "bridging_gap"
    pretrained: str | None = None  # None | "imagenet" | path to a torchvision state dict
    # ResNet50 only: start from the pretrained weights' 1000-class fc instead of a fresh one, as the
    # authors' code does on ILSVRC (whose classes are ImageNet's); needs model.pretrained and a
    # 1000-class dataset. The fc still trains at lr × optim.new_layer_lr_multiplier, as theirs.
    keep_pretrained_classifier: bool = False
    # A fastwsol checkpoint of the same architecture whose backbone initialises this model (new
    # layers fresh, as with ImageNet weights): e.g. the synthetic pretraining run.
    init_from: str | None = None
    large_feature_map: bool | None = None  # None = the backbone's default
    drop_threshold: float = 0.8  # γ
    drop_prob: float = 0.5  # p
    # Fine-tuning: the pretrained backbone's BatchNorm normalises with its pretraining statistics
    # (the new layers' with batch statistics); see TwoPathWSOLNet.train.
    freeze_backbone_bn: bool = False


@dataclass
class LossConfig:
    lambda_drop: float = 3.0
    lambda_sim: float = 0.5
    lambda_norm: float = 0.15
    fg_threshold: float = 0.6  # τ_fg
    bg_threshold: float = 0.1  # τ_bg
    fine_grained: bool = True  # S* = max over classes (CUB) or the target class (ImageNet)


@dataclass
class OptimConfig:
    epochs: int = 70
    warm_epochs: int = 20  # L_CE + λ_drop·L_drop only, at warm_batch_size
    batch_size: int = 64  # global batch (split over ranks)
    warm_batch_size: int = 32
    lr: float = 0.004  # pretrained backbone
    new_layer_lr_multiplier: float = 5.0  # new layers (conv6 + fc for VGG, fc for ResNet)
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    lr_decay_epochs: list[int] = field(default_factory=lambda: [41, 61])  # 1-based: ×factor from these epochs on
    lr_decay_factor: float = 0.2


@dataclass
class TrainConfig:
    seed: int = 0
    out_dir: str = "runs/default"
    compile: bool = True  # torch.compile the step; False = the eager reference step
    backend: Backend = "auto"  # fastwsol.ops backend for the method's ops
    precision: Precision = "fp32"  # bf16: autocast
    channels_last: bool = False
    eval_interval: int = 1  # epochs between validations (0 = only the final test)
    # 1-based: validate every epoch from this one on as well (the authors' code validates every
    # epoch from its first learning-rate decay); None = every eval_interval epochs only
    validate_every_epoch_from: int | None = None
    log_interval: int = 20  # steps between JSON-lines records
    # best checkpoint criterion on val: wsolevaluation's MaxBoxAccV2 (eval.multi_contour's), or
    # a "_single" metric (one contour: an inverted map cannot score through its hole's contour);
    # top1_loc* also needs the class right, so it never prefers a model that localises but
    # misclassifies
    select_metric: SelectMetric = "max_box_acc_v2"
    # the first epoch whose checkpoint may become best.pt (earlier ones are validated and printed
    # only): 1 = any, as the authors' code; a later one skips the epochs in which a fine-tuned model
    # still localises with its pretrained features before it classifies (configs/synthetic.yaml)
    select_from_epoch: int = 1
    max_steps_per_epoch: int | None = None  # cap for smoke runs; None = the whole epoch
    progress: bool = True
    device: str = "auto"  # auto (CUDA when there is one, else CPU), cpu, cuda or cuda:N
    # TensorBoard events in out_dir/tensorboard: None = when the tensorboard package is installed
    # (pip install -e ".[tensorboard]"), true = required, false = never
    tensorboard: bool | None = None


@dataclass
class EvalConfig:
    map: MapKind = "cam"
    iou_thresholds: list[int] = field(default_factory=lambda: [30, 50, 70])
    cam_curve_interval: float = 0.005
    multi_contour: bool = True
    batch_size: int = 64


@dataclass
class ExperimentConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class ConfigError(ValueError):
    """A config value is unknown, of the wrong type, or impossible; the message names the key."""


def _coerce(key: str, value, annotation):
    """Check/convert ``value`` to the field's annotated type (YAML or --set strings)."""
    args = typing.get_args(annotation)
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("null", "none")):
            if type(None) in args:
                return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(key, value, option)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0])
    if origin is list:
        if isinstance(value, str):
            value = yaml.safe_load(value) if value.strip() else []
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_coerce(f"{key}[{i}]", v, args[0]) for i, v in enumerate(value)]
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if annotation is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if annotation is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if annotation is str or origin is Literal:  # a Literal's choices are checked by config_problems
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    raise ConfigError(f"{key}: unsupported type {annotation}")


def _section_types(section_cls) -> dict[str, typing.Any]:
    return typing.get_type_hints(section_cls)


def _apply(config: ExperimentConfig, values: dict, origin: str) -> list[str]:
    """Set ``{section: {key: value}}`` on ``config``; returns the problems (unknown names, wrong
    types), each naming the key, and leaves those keys as they were."""
    if not isinstance(values, dict):
        return [f"{origin}: expected a mapping of sections, got {type(values).__name__}"]
    problems = []
    for section, entries in values.items():
        if section not in ExperimentConfig.__dataclass_fields__:
            problems.append(
                f"{origin}: unknown section {section!r}; sections are {list(ExperimentConfig.__dataclass_fields__)}"
            )
            continue
        if not isinstance(entries, dict):
            problems.append(f"{origin}: section {section!r} must be a mapping")
            continue
        target = getattr(config, section)
        types = _section_types(type(target))
        for key, value in entries.items():
            if key not in types:
                problems.append(f"{origin}: unknown key {section}.{key}; {section} has {sorted(types)}")
                continue
            try:
                setattr(target, key, _coerce(f"{section}.{key}", value, types[key]))
            except ConfigError as exc:
                problems.append(f"{origin}: {exc}")
    return problems


def _raise_all(problems: list[str]) -> None:
    """One ConfigError listing every problem (one line when there is one)."""
    if len(problems) == 1:
        raise ConfigError(problems[0])
    if problems:
        raise ConfigError(f"{len(problems)} problems in the config:\n  " + "\n  ".join(problems))


def apply_values(config: ExperimentConfig, values: dict, origin: str) -> None:
    """Set ``{section: {key: value}}`` on ``config``, checking names and types."""
    _raise_all(_apply(config, values, origin))


def parse_override(text: str) -> dict:
    """``"optim.lr=0.01"`` → ``{"optim": {"lr": "0.01"}}`` (typed later against the field)."""
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise ConfigError(f"--set {text!r}: expected section.key=value, e.g. optim.lr=0.01")
    dotted, value = text.split("=", 1)
    section, key = dotted.strip().split(".", 1)
    return {section: {key: value}}


def literal_choices() -> dict[tuple[str, str], tuple[str, ...]]:
    """``{(section, key): choices}`` of every enumerated setting, read off its ``Literal`` type."""
    return {
        (section, key): typing.get_args(annotation)
        for section, section_field in ExperimentConfig.__dataclass_fields__.items()
        for key, annotation in _section_types(section_field.default_factory).items()
        if typing.get_origin(annotation) is Literal
    }


def config_problems(config: ExperimentConfig) -> list[str]:
    """Impossible values and combinations, each named by its key."""
    problems = []
    name = config.model.name
    for (section, key), choices in literal_choices().items():
        value = getattr(getattr(config, section), key)
        if (section, key) == ("model", "name") and name.endswith("_cam"):
            problems.append(
                f"model.name: {name!r}: the _cam suffix is gone; vanilla CAM is "
                f"model.name={name.removesuffix('_cam')} with model.method=cam"
            )
        elif value not in choices:
            problems.append(f"{section}.{key}: {value!r} is not one of {choices}")
    o, t = config.optim, config.train
    within = [e for e in o.lr_decay_epochs if e <= o.epochs]
    checks = [
        (
            "loss.bg_threshold",
            config.loss.bg_threshold <= config.loss.fg_threshold,
            f"τ_bg ({config.loss.bg_threshold}) must not exceed τ_fg ({config.loss.fg_threshold})",
        ),
        ("loss.fg_threshold", 0.0 <= config.loss.fg_threshold <= 1.0, "must lie in [0, 1]"),
        ("loss.bg_threshold", 0.0 <= config.loss.bg_threshold <= 1.0, "must lie in [0, 1]"),
        (
            "model.init_from",
            config.model.init_from is None or config.model.pretrained is None,
            "give either model.pretrained or model.init_from, not both",
        ),
        (
            "model.keep_pretrained_classifier",
            not config.model.keep_pretrained_classifier or config.model.pretrained is not None,
            "needs model.pretrained (imagenet or a torchvision resnet50 file): it keeps that file's classifier",
        ),
        (
            "model.keep_pretrained_classifier",
            not config.model.keep_pretrained_classifier or name == "resnet50",
            f"only resnet50 has a pretrained classifier to keep, not {name} "
            f"(VGG16-GAP's classifier is replaced by conv6, GAP and a new fc)",
        ),
        ("model.drop_prob", 0.0 <= config.model.drop_prob <= 1.0, "must lie in [0, 1]"),
        ("model.drop_threshold", 0.0 <= config.model.drop_threshold <= 1.0, "must lie in [0, 1]"),
        ("optim.epochs", config.optim.epochs >= 1, "must be >= 1"),
        (
            "optim.warm_epochs",
            0 <= o.warm_epochs <= o.epochs,
            f"{o.warm_epochs} must lie in [0, optim.epochs = {o.epochs}]: "
            f"e.g. --set optim.warm_epochs={min(max(o.warm_epochs, 0), o.epochs)}",
        ),
        ("optim.batch_size", config.optim.batch_size >= 1, "must be >= 1"),
        ("optim.warm_batch_size", config.optim.warm_batch_size >= 1, "must be >= 1"),
        ("optim.lr", config.optim.lr > 0, "must be > 0"),
        ("optim.new_layer_lr_multiplier", config.optim.new_layer_lr_multiplier > 0, "must be > 0"),
        ("optim.weight_decay", config.optim.weight_decay >= 0, "must be >= 0"),
        ("optim.momentum", 0 <= config.optim.momentum < 1, "must lie in [0, 1)"),
        ("optim.lr_decay_factor", 0 < config.optim.lr_decay_factor <= 1, "must lie in (0, 1]"),
        ("optim.lr_decay_epochs", all(e >= 1 for e in o.lr_decay_epochs), "epochs are 1-based"),
        # every decay past the last epoch: a schedule that silently never applies (a shortened run);
        # some past it is the authors' ImageNet schedule (21 and 31 of 30 epochs), noted by load_config
        (
            "optim.lr_decay_epochs",
            not o.lr_decay_epochs or min(o.lr_decay_epochs) <= o.epochs,
            f"{o.lr_decay_epochs} lies beyond optim.epochs ({o.epochs}): the learning rate would never decay; "
            f"use decay epochs within the run, e.g. --set 'optim.lr_decay_epochs={_epoch_list(within)}' "
            f"(an empty list for none)",
        ),
        ("loss.lambda_drop", config.loss.lambda_drop >= 0, "must be >= 0"),
        ("loss.lambda_sim", config.loss.lambda_sim >= 0, "must be >= 0"),
        ("loss.lambda_norm", config.loss.lambda_norm >= 0, "must be >= 0"),
        ("data.image_size", config.data.image_size >= 32, "must be >= 32"),
        ("data.resize_size", config.data.resize_size >= config.data.image_size, "must be >= data.image_size"),
        ("train.eval_interval", config.train.eval_interval >= 0, "must be >= 0"),
        (
            "train.select_from_epoch",
            1 <= config.train.select_from_epoch <= config.optim.epochs,
            f"must lie in [1, optim.epochs = {config.optim.epochs}]: "
            f"e.g. --set train.select_from_epoch={min(max(config.train.select_from_epoch, 1), o.epochs)}",
        ),
        (
            "train.validate_every_epoch_from",
            t.validate_every_epoch_from is None or 1 <= t.validate_every_epoch_from <= o.epochs,
            f"must be null or lie in [1, optim.epochs = {o.epochs}]: e.g. "
            f"--set train.validate_every_epoch_from={min(max(t.validate_every_epoch_from or 1, 1), o.epochs)}",
        ),
        (
            "train.device",
            re.fullmatch(r"auto|cpu|cuda(:\d+)?", config.train.device) is not None,
            f"{config.train.device!r} is not auto, cpu, cuda or cuda:N",
        ),
        ("train.log_interval", config.train.log_interval >= 1, "must be >= 1"),
        ("eval.cam_curve_interval", 0 < config.eval.cam_curve_interval < 1, "must lie in (0, 1)"),
    ]
    localization = DATASET_LOCALIZATION.get(config.data.dataset)
    mismatch = select_metric_problem(config.train.select_metric, localization, f"data.dataset {config.data.dataset}")
    return problems + [f"{key}: {message}" for key, ok, message in checks if not ok] + ([mismatch] if mismatch else [])


def _epoch_list(epochs: list[int]) -> str:
    """``[6,8]``: a list as ``--set`` takes it (no space, so one shell word)."""
    return "[" + ",".join(str(e) for e in epochs) + "]"


def scale_schedule(config: ExperimentConfig, from_epochs: int, keep=()) -> list[str]:
    """Scale the schedule of a ``from_epochs``-epoch run to ``config.optim.epochs``, each key at
    the same fraction of the run (rounded half up): the warm stage's length, the first epoch of
    each learning-rate decay (after at least one epoch at the full rate; decays that land past
    the end are dropped: no room for them), the first selectable epoch, the first epoch of
    validation every epoch. Keys in ``keep`` (given
    by the user) stay as they are. Returns ``"key old -> new"`` for each changed key."""
    to = config.optim.epochs
    o, t = config.optim, config.train

    def same_fraction(count: float) -> int:
        return math.floor(count * to / from_epochs + 0.5)

    def same_epoch(epoch: int) -> int:  # 1-based: the epochs before it are scaled, at least one if any
        return 1 + max(same_fraction(epoch - 1), 1 if epoch > 1 else 0)

    scaled = {
        "optim.warm_epochs": min(max(same_fraction(o.warm_epochs), 0), to),
        "optim.lr_decay_epochs": sorted({same_epoch(e) for e in o.lr_decay_epochs if 1 <= same_epoch(e) <= to}),
        "train.select_from_epoch": min(max(same_epoch(t.select_from_epoch), 1), to),
        "train.validate_every_epoch_from": (
            None if t.validate_every_epoch_from is None else min(max(same_epoch(t.validate_every_epoch_from), 1), to)
        ),
    }
    changes = []
    for dotted, value in scaled.items():
        section, key = dotted.split(".")
        old = getattr(getattr(config, section), key)
        if dotted not in keep and value != old:
            setattr(getattr(config, section), key, value)
            changes.append(f"{dotted} {old} -> {value}")
    return changes


def validate(config: ExperimentConfig) -> None:
    _raise_all(config_problems(config))


# The shipped configs: ``configs/`` in a source checkout; a wheel installs the same files as
# ``fastwsol/configs`` (pyproject's package-dir mapping), so one set of files serves both.
_CONFIG_DIRS = (Path(__file__).resolve().parent / "configs", Path(__file__).resolve().parent.parent / "configs")


def shipped_configs() -> dict[str, Path]:
    """Name (``"cub_vgg16"``) → file of every shipped config."""
    folder = next((d for d in _CONFIG_DIRS if d.is_dir()), None)
    return {} if folder is None else {p.stem: p for p in sorted(folder.glob("*.yaml"))}


def config_path(name: str) -> Path:
    """A shipped config by name: ``"cub_vgg16"``, ``"cub_vgg16.yaml"`` or ``"configs/cub_vgg16.yaml"``."""
    shipped = shipped_configs()
    stem = Path(name).stem
    if stem not in shipped:
        raise FileNotFoundError(f"no shipped config named {name!r}; the shipped ones are {sorted(shipped)}")
    return shipped[stem]


def _config_file(path: str | os.PathLike) -> Path:
    """``path`` itself when it is a file; else, for a bare name or ``configs/<name>.yaml`` (e.g.
    after a non-editable install, away from the source tree), the shipped config of that name."""
    path = Path(path)
    if path.is_file():
        return path
    if path.parent in (Path("."), Path("configs")) and path.stem in shipped_configs():
        return config_path(path.stem)
    raise FileNotFoundError(
        f"config file {str(path)!r} does not exist (shipped configs, usable by name: {sorted(shipped_configs())})"
    )


def _read_yaml(path: Path, chain: tuple[Path, ...] = ()) -> dict:
    """The file's ``{section: {key: value}}``; a top-level ``extends: other.yaml`` (relative to
    the file) reads that file first and lets this one override it key by key."""
    if not path.is_file():
        origin = f" (extended by {chain[-1]})" if chain else ""
        raise FileNotFoundError(f"config file {str(path)!r}{origin} does not exist")
    if path.resolve() in chain:
        raise ConfigError(f"{path}: extends itself through {' -> '.join(map(str, chain))}")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(values, dict):
        return values  # _apply names the problem
    base = values.pop("extends", None)
    if base is None:
        return values
    if not isinstance(base, str):
        raise ConfigError(f"{path}: extends: expected a file name, got {base!r}")
    merged = _read_yaml(path.parent / base, (*chain, path.resolve()))
    for section, entries in values.items():
        if isinstance(entries, dict) and isinstance(merged.get(section), dict):
            merged[section] = {**merged[section], **entries}
        else:
            merged[section] = entries
    return merged


def load_config(
    path: str | os.PathLike | None = None,
    overrides: typing.Sequence[str] = (),
    *,
    checks: typing.Sequence[typing.Callable[[ExperimentConfig], list[str]]] = (),
) -> ExperimentConfig:
    """Defaults ← YAML file (and the file it ``extends``) ← ``--set`` overrides, then validation
    and the caller's ``checks`` (e.g. that the files a run reads exist); every problem is reported
    in one ConfigError. An override that shortens ``optim.epochs`` scales the config's schedule
    keys that are not overridden too (:func:`scale_schedule`, with a note on stderr): a short
    run of any config is one ``--set``; a value given with ``--set`` is never changed.
    ``path`` may also name a shipped config (``"cub_vgg16"``, see :func:`config_path`)."""
    config = ExperimentConfig()
    problems = []
    if path is not None:
        path = _config_file(path)
        problems += _apply(config, _read_yaml(path), str(path))
    config_epochs = config.optim.epochs
    overridden = set()
    for text in overrides:
        try:
            values = parse_override(text)
        except ConfigError as exc:
            problems.append(str(exc))
            continue
        problems += _apply(config, values, f"--set {text}")
        overridden |= {f"{section}.{key}" for section, entries in values.items() for key in entries}
    scaled = []
    if "optim.epochs" in overridden and 1 <= config.optim.epochs < config_epochs:
        scaled = scale_schedule(config, config_epochs, keep=overridden)
    problems += config_problems(config)
    for check in checks:
        problems += check(config)
    if scaled:  # before any error: what the run would be is part of what to fix
        print(
            f"fastwsol: note: optim.epochs {config.optim.epochs} shortens the config's {config_epochs} epochs, "
            f"so its schedule is scaled to the same fractions of the run: {', '.join(scaled)} "
            f"(give these keys with --set to choose them yourself)",
            file=sys.stderr,
        )
    _raise_all(problems)
    beyond = [e for e in config.optim.lr_decay_epochs if e > config.optim.epochs]
    if beyond:
        print(
            f"fastwsol: note: optim.lr_decay_epochs {beyond} lie beyond optim.epochs ({config.optim.epochs}) "
            f"and never apply",
            file=sys.stderr,
        )
    return config
