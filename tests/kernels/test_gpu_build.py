"""Every kernel, at every listed constexpr configuration, builds for sm_80 and sm_90 without a
GPU (triton.compile → PTX + cubin, bundled ``ptxas -v``), with no register spills.

The kernels are interpreter objects under TRITON_INTERPRET=1, so ``build_all`` compiles them in
a TRITON_INTERPRET=0 subprocess (about 20-60 s for all kernels on this machine).
"""

from __future__ import annotations

import pytest

from fastwsol.kernels import gpu_build


@pytest.fixture(scope="module")
def records() -> list[dict]:
    return gpu_build.build_all()


def test_discovers_every_kernel_module():
    modules = gpu_build.kernel_modules()
    for name in ("attentive_dropout", "consistency_loss"):
        assert f"fastwsol.kernels.{name}" in modules
    assert "fastwsol.kernels.gpu_build" not in modules


def test_every_spec_builds_for_both_archs_without_spills(records):
    specs = gpu_build.discover_specs()
    built = {(r["kernel"], r["arch"]) for r in records}
    assert built == {(spec["name"], arch) for spec in specs for arch in gpu_build.ARCHS}
    for r in records:
        assert 0 < r["registers"] <= 255, r
        assert r["cubin_bytes"] > 0 and r["ptx_lines"] > 0, r
        assert 0 < r["occupancy"] <= 1, r
        assert r["spill_store_bytes"] + r["spill_load_bytes"] == 0, f"{r['kernel']} spills on sm_{r['arch']}: {r}"


def test_parse_ptxas_log():
    log = (
        "ptxas info    : Compiling entry function 'k' for 'sm_90a'\n"
        "ptxas info    : Function properties for k\n"
        "    8 bytes stack frame, 12 bytes spill stores, 16 bytes spill loads\n"
        "ptxas info    : Used 40 registers, used 1 barriers, 512 bytes smem, 400 bytes cmem[0]\n"
    )
    assert gpu_build.parse_ptxas_log(log) == {
        "registers": 40, "spill_store_bytes": 12, "spill_load_bytes": 16, "static_shared": 512,
    }
    with pytest.raises(ValueError, match="no register count"):
        gpu_build.parse_ptxas_log("garbage")


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
    assert gpu_build.theoretical_occupancy(registers, shared, warps, gpu_build.SM_LIMITS[arch]) == expected


# Kernels whose results decide a strict comparison (the τ masks, S* > 0, m > γ·max): IEEE
# sqrt/division only, since the GPU's approximate forms (≤ 2 ulp) can flip a mask.
MASK_KERNELS = ("_position_stats_kernel", "_image_loss_kernel", "_channel_mean_kernel")


def test_mask_kernels_use_ieee_sqrt_and_division(records):
    checked = [r for r in records if any(name in r["kernel"] for name in MASK_KERNELS)]
    assert len(checked) >= len(MASK_KERNELS) * len(gpu_build.ARCHS)
    for r in checked:
        assert r["approx_ops"] == 0, f"{r['kernel']} on sm_{r['arch']}: {r['approx_ops']} approximate sqrt/div"
