"""Blockings of the fine-grained alignment forward (``_position_stats_kernel``), built
for sm_80 and sm_90 without a GPU, with the traffic each implies at ResNet50-CUB.

The recorded ResNet50-CUB launch (fastwsol/kernel_build.py: real shape, real specialisations) is rebuilt
with other (positions, classes, channels per step, warps, stages) and dot precisions: registers,
spill bytes, shared memory and blocks per SM from ``ptxas -v``; ŵ's L2 bytes (every program reads
all of ŵ, C×D fp32, once per class pass) and F's (once per class pass) follow from the blocking.

    python -m bench.bench_alignment_forward_blocking

Writes ``bench/results/alignment_forward_blocking.{json,csv,md}`` (``results/quick/`` unless a full run).
"""

from __future__ import annotations

import argparse
import math
import os

os.environ.setdefault("TRITON_INTERPRET", "0")  # compiled kernels: this script builds them

from bench.common import save_results  # noqa: E402
from fastwsol import kernel_build  # noqa: E402
from fastwsol.io import write_text_atomic  # noqa: E402
from fastwsol.kernel_shapes import REAL_SHAPES  # noqa: E402
from fastwsol.kernels import alignment_loss  # noqa: E402
from fastwsol.tables import markdown_table  # noqa: E402

SHAPE = "resnet50-cub"
# (dtype label, dot precision, [(BLOCK_P, BLOCK_C, BLOCK_D, warps, stages)]): "bf16" is a bf16 F
# read as such (TF32 dot), "bf16-upcast" the training objective's (bf16 F read as F.float(): tf32x3).
VARIANTS = [
    ("bf16", "tf32", [(64, 128, 32, 8, 2), (64, 256, 32, 8, 2), (128, 128, 32, 8, 2), (128, 256, 32, 8, 2),
                      (128, 256, 16, 8, 2), (128, 128, 16, 8, 2), (128, 128, 16, 8, 3)]),
    ("fp32", "tf32x3", [(32, 128, 32, 8, 2), (64, 128, 32, 8, 2), (32, 256, 16, 8, 2), (64, 256, 16, 8, 2),
                        (64, 128, 16, 8, 2), (64, 128, 16, 8, 3)]),
    ("bf16-upcast", "tf32x3", [(32, 128, 32, 8, 2), (64, 256, 16, 8, 2), (64, 128, 16, 8, 2), (64, 128, 16, 8, 3)]),
]
DTYPES = {"bf16": ("bf16", 2), "fp32": ("fp32", 4), "bf16-upcast": ("bf16", 2)}


def _recorded_launch(dtype_label: str, layout: str) -> kernel_build.Launch:
    shapes = REAL_SHAPES[SHAPE]
    upcast = dtype_label == "bf16-upcast"
    launches: list[kernel_build.Launch] = []
    _, _, call = kernel_build._op_calls(shapes, kernel_build.DTYPES[DTYPES[dtype_label][0]], layout, upcast)[0]
    context = {"op": "alignment_loss", "direction": "forward", "shape": SHAPE, "dtype": dtype_label, "layout": layout}
    with kernel_build.recording(launches, context):
        call()
    return next(launch for launch in launches if launch.fn is alignment_loss._position_stats_kernel)


def _traffic_mb(block_p: int, block_c: int, element_size: int) -> dict:
    shapes = REAL_SHAPES[SHAPE]
    batch, channels, size = shapes.batch, shapes.channels, shapes.size
    programs = batch * math.ceil(size * size / block_p)
    passes = math.ceil(shapes.classes / block_c)
    feature = batch * channels * size * size * element_size
    return {"programs": programs, "class_passes": passes, "w_l2_mb": round(programs * shapes.classes * channels * 4 / 1e6, 1),
            "f_mb": round(passes * feature / 1e6, 1)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args = parser.parse_args(argv)
    current = {}
    for dtype_label, precision, _ in VARIANTS:
        shapes = REAL_SHAPES[SHAPE]
        launch = alignment_loss.forward_launch(True, precision, shapes.batch, shapes.size ** 2)
        current[dtype_label] = (launch["BLOCK_P"], alignment_loss._block_classes(shapes.classes), launch["BLOCK_D"],
                                launch["num_warps"], launch["num_stages"])
    rows = []
    for dtype_label, precision, blockings in VARIANTS:
        for layout in kernel_build.LAYOUTS:
            base = _recorded_launch(dtype_label, layout)
            for block_p, block_c, block_d, warps, stages in blockings:
                kwargs = {**base.kwargs, "BLOCK_P": block_p, "BLOCK_C": block_c, "BLOCK_D": block_d,
                          "num_warps": warps, "num_stages": stages, "DOT_PRECISION": precision}
                launch = kernel_build.Launch(base.fn, base.grid, base.args, kwargs, "alignment_loss", "forward", SHAPE,
                                          dtype_label, layout)
                for arch in kernel_build.ARCHS:
                    r = kernel_build.build("_position_stats_kernel", launch, [], arch)
                    rows.append({
                        "dtype": dtype_label, "dot": precision, "layout": layout, "arch": f"sm_{arch}",
                        "block_p": block_p, "block_c": block_c, "block_d": block_d, "warps": warps, "stages": stages,
                        "chosen": (block_p, block_c, block_d, warps, stages) == current[dtype_label],
                        "registers": r.registers, "spill_bytes": r.spill_bytes, "shared_memory": r.shared_memory,
                        "blocks_per_sm": r.blocks_per_sm, **_traffic_mb(block_p, block_c, DTYPES[dtype_label][1]),
                    })
                    print(rows[-1], flush=True)
    markdown = format_markdown(rows)
    print(markdown)
    path = save_results("alignment_forward_blocking", {"rows": rows}, rows, parser=parser, args=args)
    write_text_atomic(path.with_suffix(".md"), markdown + "\n")


def format_markdown(rows: list[dict]) -> str:
    """One line per blocking (its sm_80 and sm_90 builds, both layouts, in one line), the op's own in bold."""
    header = ("F", "dot", "P×C×D, warps, stages", "sm_80 regs/spill", "sm_90 regs/spill", "sm_90 smem KB", "programs",
              "class passes", "ŵ L2 MB", "F MB")
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["dtype"], r["block_p"], r["block_c"], r["block_d"], r["warps"], r["stages"]), []).append(r)
    table = []
    for key, group in groups.items():

        def regs(arch, group=group):
            return " / ".join(f"{r['registers']}/{r['spill_bytes']}" for r in group if r["arch"] == arch)

        first = group[0]
        blocking = f"{key[1]}×{key[2]}×{key[3]}, {key[4]}, {key[5]}"
        if first["chosen"]:
            blocking = f"**{blocking}**"
        smem = max(r["shared_memory"] for r in group if r["arch"] == "sm_90") / 1024
        table.append((key[0], first["dot"], blocking, regs("sm_80"), regs("sm_90"), f"{smem:.0f}", first["programs"],
                      first["class_passes"], f"{first['w_l2_mb']:.0f}", f"{first['f_mb']:.0f}"))
    return (f"Fine-grained alignment forward at {SHAPE} (B=32, D=2048, 28², C=200): blockings built for "
            "sm_80/sm_90 (registers, spill bytes; nchw / channels_last), ŵ's L2 MB and F's MB per forward. "
            "**bold** = the launch the op selects.\n\n" + markdown_table(header, table))


if __name__ == "__main__":
    main()
