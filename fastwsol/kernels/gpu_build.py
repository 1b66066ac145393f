"""Ahead-of-time GPU build of every kernel, on a machine without a GPU.

Each kernel module ``fastwsol.kernels.<op>`` lists ``GPU_BUILD_SPECS``: dicts with ``name``,
``fn`` (a ``@triton.jit`` function), ``signature`` ({arg: type}), ``constexprs`` and optionally
``num_warps``, ``num_stages``, ``attrs``, ``bytes_moved(shape)``, ``bytes_minimum(shape)`` and
``shapes`` ({label: (B, D, H, W)} for the bytes columns of the benchmark). For each spec
and each target (sm_80 = A100, sm_90 = H100) this compiles PTX + cubin with ``triton.compile``
and re-runs the wheel's bundled ``ptxas -v`` on the PTX to read registers per thread, spill bytes
and shared memory, from which the theoretical occupancy follows.

Under ``TRITON_INTERPRET=1`` the ``@triton.jit`` functions are interpreter objects that cannot be
compiled, so :func:`build_all` then runs the build in a subprocess with ``TRITON_INTERPRET=0``.

    python -m fastwsol.kernels.gpu_build            # table
    python -m fastwsol.kernels.gpu_build --json     # records as JSON on stdout
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import pkgutil
import re
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass

ARCHS = (80, 90)
THREADS_PER_WARP = 32


@dataclass(frozen=True)
class SMLimits:
    """Per-SM resources that bound occupancy (CUDA occupancy calculator figures)."""

    max_warps: int = 64
    max_blocks: int = 32
    registers: int = 65536
    register_unit: int = 256  # registers are allocated per warp in units of 256
    max_registers_per_thread: int = 255
    shared_memory: int = 0  # bytes usable by blocks on one SM
    shared_unit: int = 128
    shared_reserved_per_block: int = 1024  # the driver reserves 1 KB per block (sm_80+)


SM_LIMITS = {80: SMLimits(shared_memory=164 * 1024), 90: SMLimits(shared_memory=228 * 1024)}


@dataclass
class BuildRecord:
    """One kernel configuration built for one arch."""

    kernel: str
    arch: int
    num_warps: int
    registers: int
    spill_store_bytes: int
    spill_load_bytes: int
    shared_memory: int  # bytes per block: Triton's dynamic + ptxas's static
    occupancy: float  # resident warps / max warps per SM
    blocks_per_sm: int
    limited_by: str
    ptx_lines: int
    cubin_bytes: int
    approx_ops: int  # approximate sqrt/rsqrt/rcp/div instructions (≤ 2 ulp) in the PTX

    @property
    def spill_bytes(self) -> int:
        return self.spill_store_bytes + self.spill_load_bytes


def kernel_modules() -> list[str]:
    """Names of the ``fastwsol.kernels`` submodules that declare ``GPU_BUILD_SPECS``."""
    import fastwsol.kernels as package

    names = []
    for info in pkgutil.iter_modules(package.__path__):
        if info.name == "gpu_build":
            continue
        module = importlib.import_module(f"fastwsol.kernels.{info.name}")
        if hasattr(module, "GPU_BUILD_SPECS"):
            names.append(module.__name__)
    return sorted(names)


def discover_specs() -> list[dict]:
    specs = []
    for name in kernel_modules():
        for spec in importlib.import_module(name).GPU_BUILD_SPECS:
            missing = {"name", "fn", "signature", "constexprs"} - set(spec)
            if missing:
                raise ValueError(f"{name}.GPU_BUILD_SPECS entry {spec.get('name', '?')!r} lacks {sorted(missing)}")
            specs.append(spec)
    return specs


def theoretical_occupancy(registers: int, shared_memory: int, num_warps: int, limits: SMLimits) -> tuple[float, int, str]:
    """(occupancy, blocks per SM, limiting resource) from per-thread registers and per-block shared memory."""
    warp_registers = math.ceil(max(registers, 1) * THREADS_PER_WARP / limits.register_unit) * limits.register_unit
    bounds = {
        "warps": limits.max_warps // num_warps,
        "blocks": limits.max_blocks,
        "registers": (limits.registers // warp_registers) // num_warps,
    }
    if shared_memory:
        block_shared = math.ceil((shared_memory + limits.shared_reserved_per_block) / limits.shared_unit) * limits.shared_unit
        bounds["shared memory"] = limits.shared_memory // block_shared
    limited_by = min(bounds, key=bounds.get)
    blocks = bounds[limited_by]
    return blocks * num_warps / limits.max_warps, blocks, limited_by


_APPROX_OPS = re.compile(r"\b(?:sqrt\.approx|rsqrt\.approx|rcp\.approx|div\.full|div\.approx)\.")
_REGISTERS = re.compile(r"Used (\d+) registers")
_SPILLS = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads")
_SMEM = re.compile(r"(\d+) bytes smem")


def parse_ptxas_log(log: str) -> dict[str, int]:
    """Registers, spill store/load bytes and static shared memory from ``ptxas -v`` output."""
    registers = _REGISTERS.search(log)
    if registers is None:
        raise ValueError(f"no register count in the ptxas output:\n{log}")
    spills = _SPILLS.search(log)
    smem = _SMEM.search(log)
    return {
        "registers": int(registers.group(1)),
        "spill_store_bytes": int(spills.group(1)) if spills else 0,
        "spill_load_bytes": int(spills.group(2)) if spills else 0,
        "static_shared": int(smem.group(1)) if smem else 0,
    }


def run_ptxas(ptx: str, arch: int) -> str:
    """The bundled ptxas's ``-v`` report for ``ptx`` (same flags Triton compiles with)."""
    from triton.backends.nvidia.compiler import get_ptxas, sm_arch_from_capability

    with tempfile.TemporaryDirectory() as tmp:
        source = os.path.join(tmp, "kernel.ptx")
        with open(source, "w") as f:
            f.write(ptx)
        command = [get_ptxas(arch).path, "-lineinfo", "-v", "--regAllocOptLevel=2",
                   f"--gpu-name={sm_arch_from_capability(arch)}", source, "-o", os.path.join(tmp, "kernel.cubin")]
        done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"ptxas failed ({done.returncode}) for sm_{arch}:\n{done.stderr}")
    return done.stderr + done.stdout


def pointer_alignment_attrs(fn, signature: dict[str, str]) -> dict:
    """Every pointer argument 16-byte aligned, as Triton's launcher specialises fresh torch
    tensors (the caching allocator aligns to 512 bytes), so the build matches the real launch."""
    return {(fn.arg_names.index(name),): [["tt.divisibility", 16]] for name, kind in signature.items() if kind.startswith("*")}


def build(spec: dict, arch: int) -> BuildRecord:
    """Compile ``spec`` for ``sm_<arch>`` and measure it with ``ptxas -v``. A spec's ``attrs``
    (Triton's per-argument specialisation) default to :func:`pointer_alignment_attrs`."""
    import triton
    from triton.backends.compiler import GPUTarget

    options = {k: spec[k] for k in ("num_warps", "num_stages") if k in spec}
    attrs = spec.get("attrs", pointer_alignment_attrs(spec["fn"], spec["signature"]))
    source = triton.compiler.ASTSource(
        fn=spec["fn"], signature=spec["signature"], constexprs=spec["constexprs"], attrs=attrs
    )
    compiled = triton.compile(source, target=GPUTarget("cuda", arch, THREADS_PER_WARP), options=options)
    report = parse_ptxas_log(run_ptxas(compiled.asm["ptx"], arch))
    num_warps = compiled.metadata.num_warps
    shared = compiled.metadata.shared + report["static_shared"]
    occupancy, blocks, limited_by = theoretical_occupancy(report["registers"], shared, num_warps, SM_LIMITS[arch])
    return BuildRecord(
        kernel=spec["name"], arch=arch, num_warps=num_warps, registers=report["registers"],
        spill_store_bytes=report["spill_store_bytes"], spill_load_bytes=report["spill_load_bytes"],
        shared_memory=shared, occupancy=occupancy, blocks_per_sm=blocks, limited_by=limited_by,
        ptx_lines=compiled.asm["ptx"].count("\n"), cubin_bytes=len(compiled.asm["cubin"]),
        approx_ops=len(_APPROX_OPS.findall(compiled.asm["ptx"])),
    )


def _compilable(fn) -> bool:
    from triton.runtime.jit import JITFunction

    return isinstance(fn, JITFunction)


def build_in_process(archs=ARCHS) -> list[dict]:
    return [asdict(build(spec, arch)) for spec in discover_specs() for arch in archs]


def build_all(archs=ARCHS, timeout: float = 900) -> list[dict]:
    """Records (as dicts) for every spec × arch; in a ``TRITON_INTERPRET=0`` subprocess when the
    kernels were defined under the interpreter."""
    specs = discover_specs()
    if all(_compilable(spec["fn"]) for spec in specs):
        return build_in_process(archs)
    env = {**os.environ, "TRITON_INTERPRET": "0"}
    command = [sys.executable, "-m", "fastwsol.kernels.gpu_build", "--json", "--arch", *map(str, archs)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"the GPU build subprocess failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(done.stdout)


def format_table(records: list[dict]) -> str:
    header = f"{'kernel':<62} {'arch':>5} {'warps':>5} {'regs':>5} {'spill B':>7} {'smem B':>7} {'occup':>6} {'limit':<13}"
    rows = [header, "-" * len(header)]
    for r in records:
        rows.append(
            f"{r['kernel']:<62} {'sm_' + str(r['arch']):>5} {r['num_warps']:>5} {r['registers']:>5} "
            f"{r['spill_store_bytes'] + r['spill_load_bytes']:>7} {r['shared_memory']:>7} {r['occupancy']:>6.0%} {r['limited_by']:<13}"
        )
    return "\n".join(rows)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the records as JSON")
    parser.add_argument("--arch", type=int, nargs="+", default=list(ARCHS), choices=sorted(SM_LIMITS))
    args = parser.parse_args(argv)
    records = build_all(tuple(args.arch))
    print(json.dumps(records) if args.json else format_table(records))


if __name__ == "__main__":
    main()
