"""GPU readiness of every Triton kernel, measured without a GPU.

For each kernel configuration in the kernel modules' ``GPU_BUILD_SPECS`` and each target
(sm_80 = A100, sm_90 = H100): registers per thread, spill bytes (target 0), shared memory per
block, theoretical occupancy (and what limits it), and, at the real shapes, the bytes the
launch moves against the minimum it must move (ratio 1.00 = no extra traffic).

    python bench/bench_kernels_gpu_build.py [--arch 80 90]

Prints a table and writes ``bench/results/kernels_gpu_build.{json,csv}`` (``results/quick/`` unless a full run). The build runs
in-process (or in a TRITON_INTERPRET=0 subprocess if the interpreter is on).
"""

from __future__ import annotations

import argparse
import importlib
import platform

import triton
from common import save_results

from fastwsol.kernels import gpu_build

# The real F shapes (B, D, H, W), for modules that do not state their own REAL_SHAPES.
DEFAULT_SHAPES = {"VGG16 F B=64": (64, 1024, 14, 14), "ResNet50 F B=32": (32, 2048, 28, 28)}


def spec_shapes() -> dict[str, tuple[dict, dict]]:
    """kernel name → (spec, {shape label: shape}) for the bytes columns."""
    table = {}
    for module_name in gpu_build.kernel_modules():
        module = importlib.import_module(module_name)
        shapes = getattr(module, "REAL_SHAPES", DEFAULT_SHAPES)
        for spec in module.GPU_BUILD_SPECS:
            table[spec["name"]] = (spec, spec.get("shapes", shapes))
    return table


def rows(records: list[dict]) -> list[dict]:
    specs = spec_shapes()
    out = []
    for record in records:
        spec, shapes = specs[record["kernel"]]
        base = {
            "kernel": record["kernel"], "arch": f"sm_{record['arch']}", "num_warps": record["num_warps"],
            "registers": record["registers"], "spill_bytes": record["spill_store_bytes"] + record["spill_load_bytes"],
            "shared_memory": record["shared_memory"], "occupancy": round(record["occupancy"], 4),
            "blocks_per_sm": record["blocks_per_sm"], "limited_by": record["limited_by"],
        }
        if "bytes_moved" not in spec:
            out.append({**base, "shape": "", "bytes_moved": None, "bytes_minimum": None, "bytes_ratio": None})
            continue
        for label, shape in shapes.items():
            moved = int(spec["bytes_moved"](shape))
            minimum = int(spec["bytes_minimum"](shape)) if "bytes_minimum" in spec else None
            out.append({
                **base, "shape": f"{label} {tuple(shape)}", "bytes_moved": moved, "bytes_minimum": minimum,
                "bytes_ratio": round(moved / minimum, 3) if minimum else None,
            })
    return out


def op_rows() -> list[dict]:
    """Whole-op bytes (all launches of one direction) from the modules' optional ``OP_BYTES``."""
    out = []
    for module_name in gpu_build.kernel_modules():
        module = importlib.import_module(module_name)
        for op, bytes_of in getattr(module, "OP_BYTES", {}).items():
            for label, shape in getattr(module, "REAL_SHAPES", DEFAULT_SHAPES).items():
                moved, minimum = bytes_of(shape)
                out.append({"op": op, "shape": f"{label} {tuple(shape)}", "bytes_moved": int(moved),
                            "bytes_minimum": int(minimum), "bytes_ratio": round(moved / minimum, 3)})
    return out


def format_op_table(table: list[dict]) -> str:
    header = f"{'op':<36} {'shape':<42} {'moved MB':>9} {'min MB':>9} {'ratio':>5}"
    lines = [header, "-" * len(header)]
    for r in table:
        lines.append(f"{r['op']:<36} {r['shape']:<42} {r['bytes_moved'] / 1e6:9.2f} {r['bytes_minimum'] / 1e6:9.2f} {r['bytes_ratio']:5.2f}")
    return "\n".join(lines)


def format_table(table: list[dict]) -> str:
    header = (f"{'kernel':<60} {'arch':>5} {'warps':>5} {'regs':>4} {'spill':>5} {'smem B':>7} {'occup':>6} "
              f"{'limit':<13} {'shape':<42} {'moved MB':>9} {'min MB':>9} {'ratio':>5}")
    lines = [header, "-" * len(header)]
    for r in table:
        moved = f"{r['bytes_moved'] / 1e6:9.2f}" if r["bytes_moved"] is not None else f"{'-':>9}"
        minimum = f"{r['bytes_minimum'] / 1e6:9.2f}" if r["bytes_minimum"] is not None else f"{'-':>9}"
        ratio = f"{r['bytes_ratio']:5.2f}" if r["bytes_ratio"] is not None else f"{'-':>5}"
        lines.append(
            f"{r['kernel']:<60} {r['arch']:>5} {r['num_warps']:>5} {r['registers']:>4} {r['spill_bytes']:>5} "
            f"{r['shared_memory']:>7} {r['occupancy']:>6.0%} {r['limited_by']:<13} {r['shape']:<42} {moved} {minimum} {ratio}"
        )
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, nargs="+", default=list(gpu_build.ARCHS), choices=sorted(gpu_build.SM_LIMITS))
    args = parser.parse_args(argv)
    table = rows(gpu_build.build_all(tuple(args.arch)))
    print(format_table(table))
    spilling = sorted({(r["kernel"], r["arch"]) for r in table if r["spill_bytes"]})
    print(f"\n{len({r['kernel'] for r in table})} kernel configurations; spills (target 0): "
          f"{', '.join(f'{k} on {a}' for k, a in spilling) if spilling else 'none'}")

    ops_table = op_rows()
    if ops_table:
        print("\nWhole ops (all launches of one direction) against the minimum traffic:")
        print(format_op_table(ops_table))

    meta = {"triton": triton.__version__, "python": platform.python_version(), "machine": platform.machine()}
    save_results("kernels_gpu_build", {"meta": meta, "rows": table, "ops": ops_table}, table, parser=parser, args=args)


if __name__ == "__main__":
    main()
