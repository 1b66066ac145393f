"""``fastwsol check-gpu`` rehearsed on the CPU under the GPU machine's conditions (no DALI, a
row that raises, a budget that runs out), its plan (every measured row with its comparison,
within the default budget on an H100), and its tolerances (mask flips near a threshold)."""

from __future__ import annotations

import importlib
import json
import logging
import sys

import pytest
import torch

from fastwsol import check_gpu, kernel_cases
from fastwsol.check_gpu import correctness, plan, runner
from fastwsol.check_gpu.report import format_markdown
from fastwsol.check_gpu.runner import Row, Settings
from fastwsol.cli.check_gpu import DEFAULT_BUDGET_S
from fastwsol.kernel_shapes import DRY_RUN_SHAPES, REAL_SHAPES

# One row of every kind (a compiled training step included), so the rehearsal stays short.
REHEARSAL_ROWS = ("copy bandwidth", "tiny-target fp32 nchw", "tiny-target bf16-upcast", "philox tiny-target",
                  "fp16 training", "nan fp32", "train vgg16-cub", "loss block tiny-target",
                  "timing alignment_loss tiny-target bf16-upcast", "evaluator", "dali")
FAILING_ROW = "correctness consistency_loss tiny-target fp32 nchw"


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def dry_settings(budget_s: float = 600, **fields) -> Settings:
    return Settings("cpu", True, False, budget_s, DRY_RUN_SHAPES, **fields)


def test_rehearsal_without_dali_with_a_failing_row(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "nvidia.dali", None)  # as on the GPU machine: not installed
    with pytest.raises(ImportError):
        importlib.import_module("nvidia.dali")
    from fastwsol import io

    written = []
    real_write = io.write_text_atomic

    def recording_write(path, text):
        if str(path).endswith(".json"):
            written.append(json.loads(text))
        real_write(path, text)

    monkeypatch.setattr(io, "write_text_atomic", recording_write)
    code = check_gpu.main(str(tmp_path), dry_run=True, budget_s=600, only=REHEARSAL_ROWS, fail_row=FAILING_ROW)

    assert code == 1
    report = json.loads((tmp_path / "report.json").read_text())
    rows = {r["name"]: r for r in report["rows"]}
    assert rows[FAILING_ROW]["status"] == "ERROR"
    assert "forced to fail" in rows[FAILING_ROW]["reason"] and rows[FAILING_ROW]["traceback"]
    assert rows["dali decode"]["status"] == "SKIPPED" and rows["dali decode"]["reason"] == "DALI not installed"
    others = [r for name, r in rows.items() if name not in (FAILING_ROW, "dali decode")]
    assert len(others) >= 10 and all(r["status"] == "PASS" for r in others), [
        (r["name"], r["status"], r["reason"]) for r in others if r["status"] != "PASS"]
    assert report["verdict"] == "FAIL"

    # the report was rewritten after every row, each time with one more row done
    assert len(written) == len(rows) + 1
    done = [sum(r["status"] != runner.NOT_RUN for r in w["rows"]) for w in written]
    assert done == list(range(len(rows) + 1))

    # the compiled step ran compiled, once, and its gradients were compared with the eager fp32 step's
    ours = rows["train vgg16-cub compiled bf16 channels_last (ours)"]
    # one graph, no break: as on a GPU, where the interpreter check is never reached
    assert ours["compiles"] == {"graphs": 1, "graph_breaks": 0, "recompile_limit_hits": 0}
    assert ours["details"]["worst_parameter"]["error"] <= ours["details"]["worst_parameter"]["bound"]

    # the plan came first, with estimates; the numpy/Triton/Dynamo warnings went into the report, not stderr
    out, err = capsys.readouterr()
    assert out.index("check-gpu plan:") < out.index("[1/")
    assert "Warning" not in err
    warned = [w for r in report["rows"] for w in r["warnings"]]
    assert warned and all(w["known"] for w in warned)
    markdown = (tmp_path / "report.md").read_text()
    assert markdown.startswith("# fastwsol check-gpu: FAIL") and "forced to fail" in markdown


def test_a_row_that_overruns_is_stopped_and_the_run_ends_on_time():
    clock = FakeClock()
    settings = dry_settings(budget_s=10, clock=clock)
    ran = []

    def quick(settings, shared):
        ran.append("quick")
        return {"ok": True}

    def overrunning(settings, shared):
        while True:  # a loop that checks the budget, as the timing and training loops do
            clock.now += 1
            settings.check_time("in the test's loop")

    def never(settings, shared):
        ran.append("never")
        return {"ok": True}

    rows = [Row("first", "bandwidth", 1, quick), Row("too long to start", "bandwidth", 1000, never),
            Row("overruns", "bandwidth", 2, overrunning), Row("after", "bandwidth", 0, never)]
    writes = []
    report = check_gpu.run_checks(settings, writes.append, lambda line: None, rows=rows)

    statuses = {r["name"]: (r["status"], r["reason"]) for r in report["rows"]}
    assert statuses["first"][0] == "PASS"
    assert statuses["too long to start"] == ("SKIPPED", "estimated 1000 s, 10 s of the budget left")
    assert statuses["overruns"][0] == "SKIPPED"
    assert statuses["overruns"][1] == "stopped after 10 s (estimated 2 s): the 10 s budget ran out in the test's loop"
    assert statuses["after"] == ("SKIPPED", "budget spent before this row")
    assert ran == ["quick"] and report["verdict"] == "INCOMPLETE"
    assert report["elapsed_s"] <= settings.budget_s + 1  # stopped at the loop's first check past the budget
    assert len(writes) == len(rows) + 1


def test_a_row_past_its_own_limit_is_stopped_and_the_next_row_runs():
    """A row's estimate can be wrong on a new machine (a slow compile): the row stops at
    ``row_limit_s`` (3× its estimate, at least 30 s), and the rows after it still run."""
    clock = FakeClock()
    settings = dry_settings(budget_s=1000, clock=clock)

    def slow(settings, shared):
        while True:
            clock.now += 1
            settings.check_time("in the test's loop")

    rows = [Row("slow", "bandwidth", 20, slow), Row("after", "bandwidth", 1, lambda settings, shared: {"ok": True})]
    report = check_gpu.run_checks(settings, lambda report: None, lambda line: None, rows=rows)

    slow_row, after = report["rows"]
    assert runner.row_limit_s(rows[0]) == 60 and runner.row_limit_s(rows[1]) == runner.ROW_LIMIT_MIN_S
    assert slow_row["status"] == "SKIPPED"
    assert slow_row["reason"] == "stopped after 60 s (estimated 20 s): the row's time limit ran out in the test's loop"
    assert after["status"] == "PASS" and not settings.spent
    assert report["verdict"] == "INCOMPLETE"


def _sleeping(settings, shared):
    """10 s without a check of the time, as a compile would."""
    import time

    for _ in range(200):
        time.sleep(0.05)
    return {"ok": True}


def test_the_alarm_stops_a_row_past_its_own_limit(monkeypatch):
    monkeypatch.setattr(runner, "ROW_LIMIT_MIN_S", 0.2)
    settings = dry_settings(budget_s=600)

    result = runner.run_row(settings, Row("sleeps", "bandwidth", 0, _sleeping), {})
    assert result["status"] == "SKIPPED" and result["reason"].endswith("the row's time limit ran out (alarm)")
    assert not settings.spent  # the row stopped (SKIPPED above, not PASS after 10 s); the budget was not spent


def test_the_alarm_stops_a_row_that_never_checks_the_time():
    settings = dry_settings(budget_s=1)

    result = runner.run_row(settings, Row("sleeps", "bandwidth", 0, _sleeping), {})
    assert result["status"] == "SKIPPED" and "budget" in result["reason"]


def test_a_raising_row_becomes_an_error_row_and_a_recompile_limit_fails_its_row():
    def raising(settings, shared):
        raise KeyError("missing thing")

    result = runner.run_row(dry_settings(), Row("raises", "bandwidth", 0, raising), {})
    assert result["status"] == "ERROR" and result["reason"] == "KeyError: 'missing thing'"
    assert "raising" in "\n".join(result["traceback"])

    def recompiling(settings, shared):
        import torch._dynamo

        torch._dynamo.reset()
        double = torch.compile(lambda x: x * 2, backend="eager", dynamic=False)
        with torch._dynamo.config.patch(recompile_limit=1):
            for size in (1, 2, 3):
                double(torch.ones(size))
        return {"ok": True}

    result = runner.run_row(dry_settings(), Row("recompiles", "bandwidth", 0, recompiling), {})
    assert result["compiles"]["recompile_limit_hits"] >= 1
    assert result["status"] == "FAIL" and "recompile limit" in result["reason"]


def test_a_timing_row_whose_op_cannot_be_graph_captured_fails_naming_why(monkeypatch):
    """A capture failure (a host sync in an op, say) still gives times, from events around the
    launches, but the row FAILs: the op is not graph-safe and its times include launch overhead."""
    from fastwsol.check_gpu import timing

    failed = f"{timing.CAPTURE_FAILED}: RuntimeError: operation not permitted when stream is capturing)"
    monkeypatch.setattr(timing, "kernel_time", lambda settings, fn: {"ms": 1.0, "method": failed})
    shape = next(iter(DRY_RUN_SHAPES))
    details = timing.time_kernel(dry_settings(), {"copy_bytes_per_s": 1e9}, op="consistency_loss", shape=shape,
                                 shapes=DRY_RUN_SHAPES[shape], dtype="fp32")

    assert details["ok"] is False
    assert details["reason"] == f"timed without a CUDA graph: {failed}"


def test_the_plan_has_every_measured_row_with_its_comparison():
    settings = dry_settings(budget_s=0.01, clock=FakeClock())  # every row is skipped by its estimate
    rows = plan.build_rows(settings)
    names = [r.name for r in rows]
    for shape in DRY_RUN_SHAPES:
        assert f"loss block {shape}" in names
        for op, dtypes in (("alignment_loss", 3), ("attentive_dropout", 2), ("consistency_loss", 3),
                           ("feature_losses", 2)):
            assert sum(n.startswith(f"timing {op} {shape} ") for n in names) == dtypes
        for op in ("alignment_loss", "consistency_loss", "feature_losses"):
            assert f"correctness {op} {shape} bf16-upcast channels_last" in names
        assert f"correctness feature_losses {shape} fp32 channels_last" in names
        assert f"correctness feature_losses {shape} bf16 channels_last" not in names  # it always reads F.float()
        assert f"correctness feature_losses {shape} fp32 nchw" not in names  # the step calls it channels_last
        assert f"correctness attentive_dropout-philox {shape} bf16 channels_last" in names
    for case in ("vgg16-cub", "resnet50-cub"):  # the eager baseline before the compiled step
        assert (names.index(f"train {case} eager fp32 nchw (the authors' way)")
                < names.index(f"train {case} compiled bf16 channels_last (ours)"))
    assert "evaluator vgg16-cub" in names and "correctness fp16 training refused" in names

    report = check_gpu.run_checks(settings, log=lambda line: None, rows=rows)
    markdown = format_markdown(report)
    for name in names:
        assert name.removeprefix("correctness ") in markdown or name.startswith("timing ")
    for column in ("speed-up", "gradient error: ours / eager bf16", "paper ms", "measured/floor", "model est./floor",
                   "OpenCV img/s", "mask flips"):
        assert column in markdown


@pytest.mark.parametrize("quick", [False, True])
def test_the_gpu_plan_fits_the_default_budget(quick):
    settings = Settings("cuda", False, quick, DEFAULT_BUDGET_S, REAL_SHAPES)
    rows = plan.build_rows(settings)
    assert sum(r.estimate_s for r in rows if r.section != "dali") <= 0.9 * DEFAULT_BUDGET_S
    names = [r.name for r in rows]
    assert names.index("train vgg16-cub eager fp32 nchw (the authors' way)") < names.index(
        "train vgg16-cub compiled bf16 channels_last (ours)")
    assert ("train resnet50-cub compiled bf16 channels_last (ours)" in names) is not quick


# ------------------------------------------------------------------------------- tolerances


def _flip_case():
    """One image, 2 channels, 1×4 positions, w_0 = (1, 0): the norms are 1, 2, fp32(1.6), 1.2,
    so F̂ at the third position is fp32(1.6) − 1: above τ_fg = 0.6 in float64, equal to fp32(0.6)
    in fp32 arithmetic, where ``F̂ > τ`` is false."""
    feature = torch.zeros(1, 2, 1, 4)
    feature[0, :, 0, 0] = torch.tensor([1.0, 0.0])
    feature[0, :, 0, 1] = torch.tensor([0.0, 2.0])
    feature[0, :, 0, 2] = torch.tensor([1.6, 0.0])
    feature[0, :, 0, 3] = torch.tensor([0.0, 1.2])
    return feature, torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0])


def test_a_mask_flip_near_a_threshold_is_allowed_and_the_losses_follow_the_kernels_masks():
    feature, weight, target = _flip_case()
    details = correctness.compare_alignment(feature, weight, target, thresholds=(0.6, 0.1), fine_grained=False)
    assert details["flips"]["sim"] == 1 and details["flips"]["unexplained"] == 0
    assert details["flips"]["expected"] > 0
    assert details["ok"], details
    # against the float64 reference's own masks the flip shows in the gradient
    want = kernel_cases.alignment_reference(feature, weight, target, fg_threshold=0.6, bg_threshold=0.1,
                                            fine_grained=False)
    leaf = feature.clone().requires_grad_()
    from fastwsol import ops

    losses = ops.alignment_loss(leaf, weight, target, fg_threshold=0.6, bg_threshold=0.1, fine_grained=False,
                                backend="triton")
    (kernel_cases.UPSTREAM[0] * losses[0] + kernel_cases.UPSTREAM[1] * losses[1]).backward()
    error = float((leaf.grad.double() - want["grads"][0]).abs().max() / want["grads"][0].abs().max())
    assert error > kernel_cases.grad_bound("fp32", float(want["grads"][0].abs().max()))


def test_a_mask_flip_away_from_a_threshold_fails(monkeypatch):
    feature, weight, target = _flip_case()
    nothing_near = kernel_cases.alignment_near_threshold

    def no_position_near(*args, **kwargs):
        near = nothing_near(*args, **kwargs)
        return {**near, "sim": torch.zeros_like(near["sim"]), "norm": torch.zeros_like(near["norm"])}

    monkeypatch.setattr(kernel_cases, "alignment_near_threshold", no_position_near)
    details = correctness.compare_alignment(feature, weight, target, thresholds=(0.6, 0.1), fine_grained=False)
    assert details["flips"]["unexplained"] == 1 and not details["ok"]


def test_near_threshold_positions_are_those_within_the_fp32_error_bound():
    feature, weight, target = _flip_case()
    near = kernel_cases.alignment_near_threshold(feature, weight, target, fg_threshold=0.6, bg_threshold=0.1,
                                                 fine_grained=False, dot_precision="ieee")
    assert near["sim"].tolist() == [[False, False, True, False]]  # F̂ = 0, 1, 0.6 + 2.4e-8, 0.2
    assert 0 < near["bounds"]["sim"] < 1e-5


def test_fp16_gradients_below_the_normal_range_pass():
    """Large features make ∂F small (∝ 1/‖F‖), as B·|region| does at the real shapes: fp16 stores
    them as subnormals, whose rounding step the bound must allow."""
    feature = (correctness.random_tensor((4, 16, 7, 7), torch.float32, "channels_last", "cpu", 0) * 3000).half()
    weight = correctness.random_tensor((30, 16), torch.float32, "nchw", "cpu", 1).half()
    details = correctness.compare_alignment(feature, weight, torch.tensor([1, 5, 7, 9]), thresholds=(0.6, 0.1),
                                            fine_grained=True)
    grad = details["errors"]["grad_feature"]
    assert grad["error"] > kernel_cases.ALIGNMENT_TOLERANCES["fp32"]["grad"] + kernel_cases.UNIT_ROUNDOFF["fp16"]
    assert details["ok"], details


def test_a_wrong_result_fails_the_check(monkeypatch):
    shapes = DRY_RUN_SHAPES["tiny-target"]
    case = {"shape": "tiny-target", "shapes": shapes, "dtype": "fp32", "layout": "nchw"}
    assert correctness.check_alignment(dry_settings(), {}, **case)["ok"]
    monkeypatch.setitem(kernel_cases.ALIGNMENT_TOLERANCES, "fp32", {"loss": 0.0, "grad": 0.0})
    assert not correctness.check_alignment(dry_settings(), {}, **case)["ok"]


def test_the_norm_masks_bound_is_that_of_the_kernels_class_dot():
    """The flips allowed in the norm masks come from the precision the kernel decides the class
    max's sign in (fine-grained), not from a copy of it."""
    from fastwsol.kernels import alignment_loss

    feature = correctness.random_tensor((2, 16, 3, 4), torch.float32, "nchw", "cpu", 0)
    weight = correctness.random_tensor((5, 16), torch.float32, "nchw", "cpu", 1)
    details = correctness.compare_alignment(feature, weight, torch.tensor([1, 3]), thresholds=(0.6, 0.1),
                                            fine_grained=True)
    product = kernel_cases.CLASS_DOT_PRODUCT_ERROR[alignment_loss.CLASS_DOT_PRECISION]
    assert details["flips"]["error_bounds"]["norm"] == pytest.approx(2 * (16 + 3) * 2.0**-24 + product)
    assert details["ok"], details


@pytest.mark.parametrize("dtype,upcast,layout", [("fp32", False, "nchw"), ("bf16", True, "channels_last")])
def test_the_losses_on_f_as_one_op_are_checked_against_float64(monkeypatch, dtype, upcast, layout):
    case = {"shape": "tiny-fine", "shapes": DRY_RUN_SHAPES["tiny-fine"], "dtype": dtype, "layout": layout,
            "upcast": upcast}
    details = correctness.check_feature_losses(dry_settings(), {}, **case)
    assert details["ok"], details
    assert set(details["errors"]) == {"loss_drop", "loss_sim", "loss_norm", "grad_feature", "grad_dropped",
                                      "grad_weight"}
    monkeypatch.setitem(kernel_cases.ALIGNMENT_TOLERANCES, "fp32", {"loss": 0.0, "grad": 0.0})
    assert not correctness.check_feature_losses(dry_settings(), {}, **case)["ok"]


def test_every_op_built_has_a_timing_with_its_floor():
    """Each (op, dtype) of kernel_build.OP_DTYPES (the plan's timing rows) runs; a direction with
    launches of its own has a floor, the fused op's forward (its two ops' forwards) has none."""
    from fastwsol.check_gpu import timing
    from fastwsol.kernel_build import OP_DIRECTIONS, OP_DTYPES

    shared = {"copy_bytes_per_s": 1e9}
    for op, dtypes in OP_DTYPES.items():
        for dtype in dtypes:
            result = timing.time_kernel(dry_settings(), shared, op=op, shape="tiny-target",
                                        shapes=DRY_RUN_SHAPES["tiny-target"], dtype=dtype)
            assert result["ok"], (op, dtype, result)
            for direction, times in result["directions"].items():
                assert (times["floor_us"] is not None) is (direction in OP_DIRECTIONS[op]), (op, dtype, direction)


def test_16_bit_bounds_are_the_rounding_of_the_result():
    assert kernel_cases.loss_bound("bf16", 0.5) == pytest.approx(1e-5 + 0.5 * 2**-8)
    assert kernel_cases.grad_bound("fp32", 1.0) == pytest.approx(1e-4 + 2**-24)
    assert kernel_cases.consistency_bound("fp16") == pytest.approx(1e-5 + 2**-11)
    # fp16 gradients at the real shapes lie below fp16's normal range: half a subnormal step counts
    assert kernel_cases.grad_bound("fp16", 1e-6) == pytest.approx(1e-4 + 2**-25 / 1e-6)
    small = torch.tensor([1e-6 + 1e-8], dtype=torch.float64)
    rounded = small.to(torch.float16).double()
    assert float((rounded - small).abs()) <= kernel_cases.rounding("fp16", 1e-6 + 1e-8)


def test_without_a_gpu_it_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="--dry-run"):
        check_gpu.main(str(tmp_path), budget_s=60)


def test_compiler_log_records_are_captured(monkeypatch):
    def logging_row(settings, shared):
        logging.getLogger("torch._dynamo.convert_frame").warning("something the compiler says")
        return {"ok": True}

    result = runner.run_row(dry_settings(), Row("logs", "bandwidth", 0, logging_row), {})
    assert result["logs"] == ["something the compiler says"] and result["status"] == "PASS"


def test_real_shapes_are_the_papers():
    assert REAL_SHAPES["vgg16-cub"].feature == (32, 1024, 14, 14) and REAL_SHAPES["vgg16-cub"].classes == 200
    assert REAL_SHAPES["resnet50-cub"].feature == (32, 2048, 28, 28) and REAL_SHAPES["resnet50-cub"].fine_grained
    assert REAL_SHAPES["vgg16-imagenet"].feature == (256, 1024, 14, 14) and not REAL_SHAPES["vgg16-imagenet"].fine_grained
