"""The rows of a check-gpu run, in the order they run, each with its estimated seconds (Triton
and ``torch.compile`` compiles included). The estimates are an H100's (16 CPU cores, nothing
cached) and this project's 2-core CPU's for the dry run; the runner skips a row whose estimate
exceeds the time left, so a long row is named rather than cut off midway. The H100 plan leaves a
tenth of the default budget for the estimates' error (DALI, absent there, aside).

Order: the proof first (correctness), then the headline (training steps), then the op
measurements and the evaluator: when time runs short, what is skipped is the least needed.
Compiles are bounded: the ops run uncompiled (their ``compiled`` backend is not timed), and each
model's training step is compiled once, at one shape."""

from __future__ import annotations

from functools import partial

from fastwsol.check_gpu import correctness, pipeline, timing, training
from fastwsol.check_gpu.runner import Row, Settings
from fastwsol.kernel_build import OP_DTYPES, ops_built_in
from fastwsol.kernel_cases import DTYPE_LAYOUT_CASES, DTYPES
from fastwsol.kernel_shapes import UPCAST_DTYPE

# Estimated seconds by kind of row: (on an H100, on the CPU dry run).
ESTIMATES_S = {
    "copy": (1.0, 0.5),
    "alignment_loss": (2.0, 1.5),
    "attentive_dropout": (1.0, 0.5),
    "consistency_loss": (1.0, 0.5),
    "feature_losses": (1.0, 1.5),  # its kernels compiled by the rows before it, but its backward
    "philox": (1.0, 0.5),
    "nan": (1.0, 1.0),
    "fp16_refused": (0.1, 0.1),
    "train eager vgg16": (8.0, 3.0),
    "train eager resnet50": (12.0, 3.0),
    "train compiled vgg16": (90.0, 30.0),
    "train compiled resnet50": (130.0, 30.0),
    "block": (3.0, 2.0),
    "timing": (0.7, 1.5),  # 2 × 24 calls of a few ms; the kernels compiled by the correctness rows
    "evaluator": (30.0, 5.0),  # numba compiles the component tree on a fresh machine
    "dali": (30.0, 0.1),
}
CHECKS = {"alignment_loss": correctness.check_alignment, "attentive_dropout": correctness.check_dropout,
          "consistency_loss": correctness.check_consistency, "feature_losses": correctness.check_feature_losses}
# The ops only the training step calls, and only channels_last: checked in that layout alone.
STEP_ONLY_OPS = ("feature_losses",)
EVALUATOR_BATCHES = 2


def _estimate(settings: Settings, kind: str) -> float:
    return ESTIMATES_S[kind][0 if settings.on_gpu else 1]


def _correctness_rows(settings: Settings) -> list[Row]:
    rows = []
    shapes = dict(list(settings.shapes.items())[:1]) if settings.quick else settings.shapes
    first = next(iter(settings.shapes))
    for shape, op_shapes in shapes.items():
        case = {"shape": shape, "shapes": op_shapes}
        for dtype, layout in DTYPE_LAYOUT_CASES:
            for op in ops_built_in(dtype):
                if op in STEP_ONLY_OPS and layout != "channels_last":
                    continue
                rows.append(Row(f"correctness {op} {shape} {dtype} {layout}", "correctness",
                                _estimate(settings, op), partial(CHECKS[op], **case, dtype=dtype, layout=layout)))
        for op in ops_built_in(UPCAST_DTYPE):  # the training path: a bf16 F read as fp32
            rows.append(Row(f"correctness {op} {shape} {UPCAST_DTYPE} channels_last", "correctness",
                            _estimate(settings, op),
                            partial(CHECKS[op], **case, dtype="bf16", layout="channels_last", upcast=True)))
        rows.append(Row(f"correctness attentive_dropout-philox {shape} bf16 channels_last", "correctness",
                        _estimate(settings, "philox"),
                        partial(correctness.check_philox, **case, dtype="bf16", layout="channels_last")))
    case = {"shape": first, "shapes": settings.shapes[first]}
    for op in ops_built_in("bf16"):  # the ops that take a 16-bit input as it is
        rows.append(Row(f"correctness {op} {first} fp16 channels_last", "correctness", _estimate(settings, op),
                        partial(CHECKS[op], **case, dtype="fp16", layout="channels_last")))
    rows.append(Row("correctness fp16 training refused", "correctness", _estimate(settings, "fp16_refused"),
                    correctness.check_fp16_training_refused))
    for dtype in DTYPES:
        rows.append(Row(f"correctness nan {dtype}", "correctness", _estimate(settings, "nan"),
                        partial(correctness.check_nan, dtype=dtype)))
    return rows


def _training_rows(settings: Settings) -> list[Row]:
    rows = []
    for name, case in training.train_cases(settings).items():
        family = "resnet50" if name.startswith("resnet50") else "vgg16"
        keywords = {"case_name": name, "case": case}
        # the eager baseline first, so that the compiled row always has its ratio
        rows.append(Row(f"train {name} eager fp32 nchw (the authors' way)", "train_step",
                        _estimate(settings, f"train eager {family}"), partial(training.train_reference, **keywords)))
        rows.append(Row(f"train {name} compiled bf16 channels_last (ours)", "train_step",
                        _estimate(settings, f"train compiled {family}"), partial(training.train_ours, **keywords)))
    return rows


def _measurement_rows(settings: Settings) -> list[Row]:
    shapes = dict(list(settings.shapes.items())[:1]) if settings.quick else settings.shapes
    rows = [Row(f"loss block {shape}", "loss_block", _estimate(settings, "block"),
                partial(timing.time_loss_block, shape=shape, shapes=op_shapes)) for shape, op_shapes in shapes.items()]
    for shape, op_shapes in shapes.items():
        for op, dtypes in OP_DTYPES.items():
            for dtype in dtypes:
                rows.append(Row(f"timing {op} {shape} {dtype}", "kernel_timing", _estimate(settings, "timing"),
                                partial(timing.time_kernel, op=op, shape=shape, shapes=op_shapes, dtype=dtype)))
    return rows


def build_rows(settings: Settings) -> list[Row]:
    """Every row of this run, in order; ``settings.only`` keeps those whose name contains one of its strings."""
    from fastwsol.data.dali_loader import dali_available

    first_case_name, first_case = next(iter(training.train_cases(settings).items()))
    rows = [
        Row("copy bandwidth", "bandwidth", _estimate(settings, "copy"), timing.copy_bandwidth),
        *_correctness_rows(settings),
        *_training_rows(settings),
        *_measurement_rows(settings),
        Row(f"evaluator {first_case_name}", "evaluator", _estimate(settings, "evaluator"),
            partial(pipeline.evaluate_maps, case_name=first_case_name, case=first_case, batches=EVALUATOR_BATCHES)),
        Row("dali decode", "dali", _estimate(settings, "dali") if dali_available() else 0.0, pipeline.dali_decode),
    ]
    if settings.only:
        rows = [r for r in rows if any(part in r.name for part in settings.only)]
    return rows
