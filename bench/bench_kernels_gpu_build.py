"""The kernels' GPU build and roofline, measured without a GPU.

Build (``fastwsol/kernel_build.py``): every distinct binary the ops' real launches select, compiled with
those launches' specialisations for sm_80 (A100) and sm_90 (H100): registers per thread, spill
bytes (target 0), shared memory, theoretical occupancy, vector vs scalar global loads.

Roofline: per op and direction at each real shape (``fastwsol.kernel_shapes``) and dtype, the
traffic model's bytes from HBM and through L2, FLOPs, and the H100 SXM time they bound:
max(HBM bytes / 3.35 TB/s, L2 bytes / 10 TB/s, TF32 tensor FLOPs / 495 TFLOPS + bf16 tensor FLOPs
/ 989 TFLOPS + FLOPs / 67 TFLOPS),
against the floor (the least HBM traffic / 3.35 TB/s); waves = programs of the op's main kernel's
largest launch / (132 SMs × resident blocks per SM from the sm_90 build). HBM, tensor and FP32 peaks are NVIDIA's
H100 SXM datasheet figures; the L2 bandwidth is an assumption (no datasheet figure), so L2-bound
rows are estimates in a second sense. ``fastwsol check-gpu`` measures the real times. Then one
training step's kernels (``kernel_shapes.TRAINING_STEP``), their total against the step's floor.

    python -m bench.bench_kernels_gpu_build [--arch 80 90]

Writes ``bench/results/kernels_gpu_build.{json,csv}`` and ``bench/results/roofline.{json,csv,md}``
(``results/quick/`` unless a full run).
"""

from __future__ import annotations

import argparse
import platform

import triton

from bench.common import save_results
from fastwsol import kernel_build
from fastwsol.io import write_text_atomic
from fastwsol.kernel_shapes import REAL_SHAPES, op_traffic, training_step_traffic
from fastwsol.tables import markdown_table

H100 = {"hbm": 3.35e12, "l2": 10e12, "tensor_tf32": 494.7e12, "tensor_bf16": 989.4e12, "fp32": 66.9e12, "sms": 132}
MAIN_KERNEL = {  # the launch whose grid sets the op's waves
    ("alignment_loss", "forward"): "_position_stats_kernel", ("alignment_loss", "backward"): "_feature_grad_kernel",
    ("attentive_dropout", "forward"): "_dropout_forward_kernel", ("attentive_dropout", "backward"): "_apply_keep_kernel",
    ("consistency_loss", "forward"): "_abs_difference_sum_kernel",
    ("consistency_loss", "backward"): "_abs_difference_backward_kernel",
    ("feature_losses", "backward"): "_feature_grad_kernel",
}


def build_rows(records: list[dict]) -> list[dict]:
    return [{
        "kernel": r["kernel"], "arch": f"sm_{r['arch']}", "num_warps": r["num_warps"], "registers": r["registers"],
        "spill_bytes": r["spill_store_bytes"] + r["spill_load_bytes"], "shared_memory": r["shared_memory"],
        "occupancy": round(r["occupancy"], 4), "blocks_per_sm": r["blocks_per_sm"], "limited_by": r["limited_by"],
        "vector_loads": r["vector_loads"], "scalar_loads": r["scalar_loads"], "loop_barriers": r["loop_barriers"],
        "approx_ops": r["approx_ops"],
        "launches": len(r["launches"]),
    } for r in records]


def _waves(records: list[dict], op: str, direction: str, shape: str, dtype: str) -> float | None:
    """Waves on an H100 of the main kernel's largest launch (channels_last; fastwsol.kernel_build)."""
    waves = [launch["waves"] for r in records if r["arch"] == 90 and MAIN_KERNEL[(op, direction)] in r["kernel"]
             for launch in r["launches"] if (launch["op"], launch["direction"], launch["shape"], launch["dtype"],
                                              launch["layout"]) == (op, direction, shape, dtype, "channels_last")]
    return max(waves, default=None)


def _bounds(t) -> dict[str, float]:
    """Seconds each resource bounds the traffic ``t`` to on an H100."""
    return {"HBM": t.hbm_bytes / H100["hbm"], "L2": t.l2_bytes / H100["l2"],
            "compute": t.tensor_flops / H100["tensor_tf32"] + t.bf16_tensor_flops / H100["tensor_bf16"]
            + t.flops / H100["fp32"]}


def roofline_rows(records: list[dict]) -> list[dict]:
    rows = []
    for shape_name, shapes in REAL_SHAPES.items():
        for op, dtypes in kernel_build.OP_DTYPES.items():
            for dtype in dtypes:
                for direction in kernel_build.OP_DIRECTIONS[op]:
                    t = op_traffic(op, shapes, dtype, direction)
                    bounds = _bounds(t)
                    bound = max(bounds, key=bounds.get)
                    floor = t.minimum_bytes / H100["hbm"]
                    waves = _waves(records, op, direction, shape_name, dtype)
                    rows.append({
                        "op": op, "direction": direction, "shape": shape_name, "dtype": dtype,
                        "hbm_mb": round(t.hbm_bytes / 1e6, 2), "l2_mb": round(t.l2_bytes / 1e6, 2),
                        "gflop": round((t.flops + t.tensor_flops + t.bf16_tensor_flops) / 1e9, 3),
                        "estimate_us": round(bounds[bound] * 1e6, 1), "bound": bound,
                        "floor_us": round(floor * 1e6, 1), "estimate_over_floor": round(bounds[bound] / floor, 2),
                        "waves": round(waves, 2) if waves is not None else None,
                    })
    return rows


def training_step_rows() -> list[dict]:
    """Per real shape: the kernels of one training step (``kernel_shapes.TRAINING_STEP``), each at
    its bound, their total against the step's floor."""
    rows = []
    for shape_name, shapes in REAL_SHAPES.items():
        parts = [(entry, max(_bounds(t).values()), t.minimum_bytes / H100["hbm"])
                 for entry, t in training_step_traffic(shapes)]
        estimate, floor = sum(p[1] for p in parts), sum(p[2] for p in parts)
        rows.append({"shape": shape_name, **{"/".join(entry): round(e * 1e6, 1) for entry, e, _ in parts},
                     "estimate_us": round(estimate * 1e6, 1), "floor_us": round(floor * 1e6, 1),
                     "estimate_over_floor": round(estimate / floor, 2)})
    return rows


def format_training_step_markdown(rows: list[dict]) -> str:
    parts = [k for k in rows[0] if k.count("/") == 2]
    header = ("shape", *(" ".join(p.split("/")[:2]).replace("_", " ") + " µs" for p in parts),
              "step est. µs", "step floor µs", "est./floor")
    table = [(r["shape"], *(f"{r[p]:.1f}" for p in parts), f"{r['estimate_us']:.1f}", f"{r['floor_us']:.1f}",
              f"{r['estimate_over_floor']:.2f}") for r in rows]
    dtypes = ", ".join(f"{' '.join(p.split('/')[:2]).replace('_', ' ')}: {p.split('/')[2]}" for p in parts)
    return ("One training step at the full objective under bf16 autocast (" + dtypes + "): each op at its bound "
            "above, the step's total against its floor: the least HBM traffic of each op, summed, with F read once "
            "by the losses' forward (kernel_shapes.training_step_traffic).\n\n"
            + markdown_table(header, table))


def format_markdown(rows: list[dict]) -> str:
    header = ("op", "dir", "shape", "dtype", "HBM MB", "L2 MB", "GFLOP", "est. H100 µs", "bound", "floor µs",
              "est./floor", "waves")
    table = [(r["op"], r["direction"][:3], r["shape"], r["dtype"], f"{r['hbm_mb']:.1f}", f"{r['l2_mb']:.1f}",
              f"{r['gflop']:.2f}", f"{r['estimate_us']:.1f}", r["bound"], f"{r['floor_us']:.1f}",
              f"{r['estimate_over_floor']:.2f}", r["waves"] if r["waves"] is not None else "-") for r in rows]
    return markdown_table(header, table)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, nargs="+", default=list(kernel_build.ARCHS),
                        choices=sorted(kernel_build.SM_LIMITS))
    args = parser.parse_args(argv)
    records = kernel_build.build_all(tuple(args.arch))
    builds = build_rows(records)
    for r in builds:
        print(f"{r['kernel']:<96} {r['arch']} w{r['num_warps']} regs {r['registers']:>3} spill {r['spill_bytes']} "
              f"occ {r['occupancy']:.0%} ({r['limited_by']}) ld v/s {r['vector_loads']}/{r['scalar_loads']}")
    spilling = sorted({(r["kernel"], r["arch"]) for r in builds if r["spill_bytes"]})
    print(f"\n{len({r['kernel'] for r in builds})} distinct binaries; spills (target 0): {spilling or 'none'}\n")
    roofline = roofline_rows(records)
    step = training_step_rows()
    markdown = format_markdown(roofline) + "\n\n" + format_training_step_markdown(step)
    print(markdown)
    meta = {"triton": triton.__version__, "python": platform.python_version(), "machine": platform.machine(),
            "h100": H100}
    save_results("kernels_gpu_build", {"meta": meta, "rows": builds, "records": records}, builds,
                 parser=parser, args=args)
    path = save_results("roofline", {"meta": meta, "rows": roofline, "training_step": step}, roofline,
                        parser=parser, args=args)
    write_text_atomic(path.with_suffix(".md"), markdown + "\n")


if __name__ == "__main__":
    main()
