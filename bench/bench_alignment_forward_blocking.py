"""Blockings of the fine-grained alignment forward (``_position_stats_kernel``: one bf16 class
dot over all 256-padded classes in one pass over F), built for sm_80 and sm_90 without a GPU, with
the traffic each implies at the CUB shapes.

The recorded launch (fastwsol/kernel_build.py: real shape, real specialisations) of the training
objective's call (a bf16 F read as F.float()) is rebuilt with other (positions, channels per step,
warps, stages): registers, spill bytes, shared memory and blocks per SM from ``ptxas -v``; the
programs, waves on an H100 (132 SMs × blocks per SM), and bf16(ŵ)'s L2 bytes (every program reads
all of it, C×D bf16) follow from the blocking.

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
from fastwsol.kernel_shapes import REAL_SHAPES, UPCAST_DTYPE  # noqa: E402
from fastwsol.kernels import alignment_loss  # noqa: E402
from fastwsol.tables import markdown_table  # noqa: E402

SHAPES = ("vgg16-cub", "resnet50-cub")
# (BLOCK_P, BLOCK_D, warps, stages)
BLOCKINGS = [(32, 32, 8, 3), (32, 64, 8, 3), (64, 32, 8, 3), (64, 64, 8, 3), (128, 16, 8, 3), (128, 32, 8, 3)]
SMS = 132


def _recorded_launch(shape: str, layout: str) -> kernel_build.Launch:
    launches: list[kernel_build.Launch] = []
    context = {"op": "alignment_loss", "direction": "forward", "shape": shape, "dtype": UPCAST_DTYPE, "layout": layout}
    for op, direction, call in kernel_build._op_calls(REAL_SHAPES[shape], UPCAST_DTYPE, layout):
        if (op, direction) == ("alignment_loss", "forward"):
            with kernel_build.recording(launches, context):
                call()
    return next(launch for launch in launches if launch.fn is alignment_loss._position_stats_kernel)


def _traffic_mb(shape: str, block_p: int) -> dict:
    shapes = REAL_SHAPES[shape]
    programs = shapes.batch * math.ceil(shapes.size ** 2 / block_p)
    return {"programs": programs, "w_l2_mb": round(programs * shapes.classes * shapes.channels * 2 / 1e6, 1)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args = parser.parse_args(argv)
    rows = []
    for shape in SHAPES:
        shapes = REAL_SHAPES[shape]
        launch = alignment_loss.forward_launch(True, shapes.batch, shapes.size ** 2)
        chosen = (launch["BLOCK_P"], launch["BLOCK_D"], launch["num_warps"], launch["num_stages"])
        for layout in kernel_build.LAYOUTS:
            base = _recorded_launch(shape, layout)
            for block_p, block_d, warps, stages in BLOCKINGS:
                kwargs = {**base.kwargs, "BLOCK_P": block_p, "BLOCK_D": block_d, "num_warps": warps,
                          "num_stages": stages}
                launch = kernel_build.Launch(base.fn, base.grid, base.args, kwargs, "alignment_loss", "forward", shape,
                                             UPCAST_DTYPE, layout)
                for arch in kernel_build.ARCHS:
                    r = kernel_build.build("_position_stats_kernel", launch, [], arch)
                    traffic = _traffic_mb(shape, block_p)
                    rows.append({
                        "shape": shape, "layout": layout, "arch": f"sm_{arch}", "block_p": block_p, "block_d": block_d,
                        "warps": warps, "stages": stages, "chosen": (block_p, block_d, warps, stages) == chosen,
                        "registers": r.registers, "spill_bytes": r.spill_bytes, "shared_memory": r.shared_memory,
                        "blocks_per_sm": r.blocks_per_sm, "loop_barriers": r.loop_barriers,
                        "waves": round(traffic["programs"] / (SMS * r.blocks_per_sm), 2), **traffic,
                    })
                    print(rows[-1], flush=True)
    markdown = format_markdown(rows)
    print(markdown)
    path = save_results("alignment_forward_blocking", {"rows": rows}, rows, parser=parser, args=args)
    write_text_atomic(path.with_suffix(".md"), markdown + "\n")


def format_markdown(rows: list[dict]) -> str:
    """One line per shape and blocking (its sm_80 and sm_90 builds, both layouts), the op's own in bold."""
    header = ("shape", "P×D, warps, stages", "sm_80 regs/spill", "sm_90 regs/spill", "sm_90 smem KB",
              "sm_90 blocks/SM", "programs", "sm_90 waves", "ŵ L2 MB")
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["shape"], r["block_p"], r["block_d"], r["warps"], r["stages"]), []).append(r)
    table = []
    for key, group in groups.items():

        def per_layout(arch, field=None, group=group):
            return " / ".join(f"{r['registers']}/{r['spill_bytes']}" if field is None else str(r[field])
                              for r in group if r["arch"] == arch)

        first = group[0]
        blocking = f"{key[1]}×{key[2]}, {key[3]}, {key[4]}"
        if first["chosen"]:
            blocking = f"**{blocking}**"
        smem = max(r["shared_memory"] for r in group if r["arch"] == "sm_90") / 1024
        table.append((key[0], blocking, per_layout("sm_80"), per_layout("sm_90"), f"{smem:.0f}",
                      per_layout("sm_90", "blocks_per_sm"), first["programs"], per_layout("sm_90", "waves"),
                      f"{first['w_l2_mb']:.0f}"))
    return ("Fine-grained alignment forward, bf16 F read as F.float() (C = 200 in one 256-class pass): blockings "
            "built for sm_80/sm_90 (registers/spill bytes, blocks per SM and waves: nchw / channels_last), bf16(ŵ)'s "
            "L2 MB per forward. **bold** = the launch the op selects.\n\n" + markdown_table(header, table))


if __name__ == "__main__":
    main()
