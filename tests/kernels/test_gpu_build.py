"""Every kernel binary the ops' real launches select (fastwsol.kernel_build: launches recorded at the
real shapes and specialised as Triton's launcher does) builds for sm_80 and sm_90 without a GPU,
with no register spills and IEEE sqrt/division where a strict mask depends on the result.

The kernels are interpreter objects under TRITON_INTERPRET=1, so ``build_all`` compiles them in
a TRITON_INTERPRET=0 subprocess (about 1-2 min for all binaries on this machine).
"""

from __future__ import annotations

import pytest

from fastwsol import kernel_build
from fastwsol.kernel_shapes import REAL_SHAPES


@pytest.fixture(scope="module")
def records() -> list[dict]:
    return kernel_build.build_all()


def test_every_real_launch_is_built_for_both_archs_without_spills(records):
    launched = {(launch["op"], launch["direction"], launch["shape"], launch["dtype"], launch["layout"])
                for r in records for launch in r["launches"]}
    assert launched == {(op, d, s, t, layout) for op, dtypes in kernel_build.OP_DTYPES.items() for t in dtypes
                        for d in kernel_build.OP_DIRECTIONS[op] for s in REAL_SHAPES for layout in ("nchw", "channels_last")}
    assert {(r["kernel"], r["arch"]) for r in records} == {(r["kernel"], a) for r in records for a in kernel_build.ARCHS}
    for r in records:
        assert 0 < r["registers"] <= 255, r["kernel"]
        assert r["cubin_bytes"] > 0 and 0 < r["occupancy"] <= 1, r["kernel"]
        assert r["spill_store_bytes"] + r["spill_load_bytes"] == 0, f"{r['kernel']} spills on sm_{r['arch']}"


def test_launches_are_specialised_as_on_a_gpu(records):
    """A stride of 1 becomes a constant and a 16-divisible integer an attribute, as Triton's launcher does."""
    def binary(layout):
        return next(r for r in records if "_abs_difference_sum_kernel" in r["kernel"] and any(
            (launch["shape"], launch["dtype"], launch["layout"]) == ("vgg16-cub", "fp32", layout) for launch in r["launches"]))

    assert "stride_fw" in binary("nchw")["constant_one"]  # NCHW: W is the unit stride
    assert "stride_fd" in binary("channels_last")["constant_one"]  # channels_last: D is
    assert "D" in binary("nchw")["divisible_by_16"] and "f_ptr" in binary("nchw")["divisible_by_16"]  # D = 1024


# Kernels whose results decide a strict comparison (the τ masks, S* > 0, m > γ·max) need IEEE
# sqrt/division, since the GPU's approximate forms (≤ 2 ulp) can flip a mask; no kernel uses the
# approximate forms (the gradients then round as torch's do).
MASK_KERNELS = ("_position_stats_kernel", "_image_loss_kernel", "_dropout_forward_kernel")


def test_kernels_use_ieee_sqrt_and_division(records):
    checked = [r for r in records if any(name in r["kernel"] for name in MASK_KERNELS)]
    assert len(checked) >= len(MASK_KERNELS) * len(kernel_build.ARCHS)
    for r in records:
        assert r["approx_ops"] == 0, f"{r['kernel']} on sm_{r['arch']}: {r['approx_ops']} approximate sqrt/div"


def test_class_dot_is_one_bf16_pass_and_the_recheck_fp32_accurate(records):
    """The fine-grained class dot runs on bf16 tensor cores (one pass; the interpreter's tests run
    it on fp32 operands of the same values), the recheck on TF32 ones (tf32x3), the rest on none."""
    fine = [r for r in records if "_position_stats_kernel" in r["kernel"]
            and any(launch["shape"] != "vgg16-imagenet" for launch in r["launches"])]
    recheck = [r for r in records if "_class_max_recheck_kernel" in r["kernel"]]
    assert fine and recheck
    for r in records:
        expected = ["bf16"] if r in fine else ["tf32"] if r in recheck else []
        assert r["mma_types"] == expected, f"{r['kernel']} sm_{r['arch']}: {r['mma_types']}"


# The kernels whose work grows with F or the dropout's input (not the per-image loss kernel, nor
# the recheck, whose work is the listed positions)
STREAMING_F_OR_X = ("_position_stats_kernel", "_feature_grad_kernel", "_dropout_forward_kernel", "_apply_keep_kernel",
                    "_abs_difference_sum_kernel", "_abs_difference_backward_kernel")


def test_grids_fill_a_wave_at_the_cub_shapes(records):
    """On an H100 every such kernel's largest launch of an op call at the CUB shapes has at least as
    many programs as its SMs hold at once (the dropout forward's first launch, which only takes the
    means of the first group of images, fills the pipeline and is smaller)."""
    largest: dict[tuple, float] = {}
    for r in records:
        if r["arch"] != 90 or not any(k in r["kernel"] for k in STREAMING_F_OR_X):
            continue
        for launch in r["launches"]:
            if launch["shape"].endswith("-cub"):
                key = (r["kernel"].split("[")[0], launch["op"], launch["direction"], launch["shape"], launch["dtype"],
                       launch["layout"])
                largest[key] = max(largest.get(key, 0.0), launch["waves"])
    assert {key[0].split("/")[1] for key in largest} == set(STREAMING_F_OR_X)
    short = {key: round(waves, 2) for key, waves in largest.items() if waves < 1}
    assert not short, short


def test_parse_ptxas_log():
    log = (
        "ptxas info    : Compiling entry function 'k' for 'sm_90a'\n"
        "ptxas info    : Function properties for k\n"
        "    8 bytes stack frame, 12 bytes spill stores, 16 bytes spill loads\n"
        "ptxas info    : Used 40 registers, used 1 barriers, 512 bytes smem, 400 bytes cmem[0]\n"
    )
    assert kernel_build.parse_ptxas_log(log) == {
        "registers": 40, "spill_store_bytes": 12, "spill_load_bytes": 16, "static_shared": 512,
    }
    with pytest.raises(ValueError, match="no register count"):
        kernel_build.parse_ptxas_log("garbage")


@pytest.mark.parametrize(
    "registers,shared,warps,arch,expected",
    [
        (32, 0, 4, 80, (1.0, 16, "warps")),  # 16 blocks × 4 warps = 64 warps
        (128, 0, 4, 80, (0.25, 4, "registers")),  # 4096 registers per warp → 16 warps
        (62, 0, 8, 90, (0.5, 4, "registers")),  # 62 → 64 per thread, 2048 per warp → 32 warps
        (32, 100 * 1024, 4, 80, (1 / 16, 1, "shared memory")),  # 101 KB per block in 164 KB
        (32, 100 * 1024, 4, 90, (2 / 16, 2, "shared memory")),  # 228 KB holds two
    ],
)
def test_theoretical_occupancy(registers, shared, warps, arch, expected):
    assert kernel_build.theoretical_occupancy(registers, shared, warps, kernel_build.SM_LIMITS[arch]) == expected


# Streaming kernels and the scalar loads they may keep: one value a thread, the gradient's
# upstream scale or the seed; the dropout forward's mask also reads the means of its positions
# and the image's tile maxima (fewer values than threads).
STREAMING_KERNELS = {"_abs_difference_sum_kernel": 1, "_abs_difference_backward_kernel": 1,
                     "_dropout_forward_kernel": 3, "_apply_keep_kernel": 1}


def test_nchw_streaming_kernels_use_vector_loads(records):
    """NCHW (the default layout) at 14² and 28²: flat u·stride_w addressing with the alignment
    hints gives vector loads (the (u // W, u % W) form compiled to one scalar load per element)."""
    checked = [(r, allowed) for r in records for k, allowed in STREAMING_KERNELS.items() if k in r["kernel"]
               and any(launch["layout"] == "nchw" for launch in r["launches"])]
    assert {launch["shape"] for r, _ in checked for launch in r["launches"]} == set(REAL_SHAPES)
    for r, allowed in checked:
        assert r["vector_loads"] > 0 and r["scalar_loads"] <= allowed, f"{r['kernel']} sm_{r['arch']}: {r}"


def test_channel_loops_reduce_once(records):
    """The channel sums (dropout mean; norm and target dot of the alignment stats) accumulate a
    2-D tile and reduce after the loop, and the backward of the losses on F owns one tile (no
    loop): no barrier inside a loop (the target-only stats kernel, the channel mean, the
    backward; the fine-grained stats kernel keeps the class dot's shared-memory staging)."""
    checked = [r for r in records if "_dropout_forward_kernel" in r["kernel"] or "_feature_grad_kernel" in r["kernel"]
               or ("_position_stats_kernel" in r["kernel"] and "vgg16-imagenet" in r["kernel"])]
    assert len(checked) >= 6
    for r in checked:
        assert r["loop_barriers"] == 0, f"{r['kernel']} sm_{r['arch']}: {r['loop_barriers']} barriers in a loop"


def test_loop_barriers_counts_only_loop_bodies():
    ptx = "bar.sync 0;\n$L__BB0_2:  // loop\nadd.s32 %r1, %r1, 1;\nbar.sync 0;\n@%p1 bra $L__BB0_2;\nbar.sync 0;\n"
    assert kernel_build.loop_barriers(ptx) == 1
