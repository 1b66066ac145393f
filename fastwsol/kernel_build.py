"""Ahead-of-time GPU build of every kernel launch the ops make at the real shapes, on a machine
without a GPU.

The specs are not written by hand: each op (forward and backward, fp32 and bf16, NCHW and
channels_last, every shape of ``fastwsol.kernel_shapes.REAL_SHAPES``; and the losses on a bf16 F
read as its fp32 upcast, the training objective's calls: dtype ``bf16-upcast``) is called on CPU tensors
of the real shape with every ``@triton.jit`` kernel's launcher replaced by a recorder. Each
recorded launch is bound and specialised exactly as Triton's launcher does on a GPU (integer
arguments equal to 1 become constants, divisibility by 16 of integers and pointers becomes an
attribute), then compiled with ``triton.compile`` for sm_80 (A100) and sm_90 (H100); the wheel's
bundled ``ptxas -v`` on the PTX gives registers per thread, spill bytes and shared memory, from
which the theoretical occupancy follows.

The kernels must be compiled functions (``TRITON_INTERPRET=0``); :func:`build_all` runs the
build in such a subprocess when the interpreter is on.

    python -m fastwsol.kernel_build [--arch 80 90] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from fastwsol.kernel_shapes import REAL_SHAPES, UPCAST_DTYPE

ARCHS = (80, 90)
THREADS_PER_WARP = 32
SM_COUNT = {80: 108, 90: 132}  # A100 SXM, H100 SXM
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
# The dtypes each op is built in; UPCAST_DTYPE: a bf16 F read as F.float() (fp32 weight), the
# training objective's calls. The losses on F as one op always compute on F.float().
OP_DTYPES = {
    "alignment_loss": ("fp32", "bf16", UPCAST_DTYPE),
    "attentive_dropout": ("fp32", "bf16"),
    "consistency_loss": ("fp32", "bf16", UPCAST_DTYPE),
    "feature_losses": ("fp32", UPCAST_DTYPE),
}
# The directions with launches of their own: the forward of the losses on F as one op is the
# consistency and alignment forwards (upcast), recorded under those ops.
OP_DIRECTIONS = {op: ("backward",) if op == "feature_losses" else ("forward", "backward") for op in OP_DTYPES}


def ops_built_in(dtype_name: str) -> tuple[str, ...]:
    """The ops of ``OP_DTYPES`` built in ``dtype_name``, in its order."""
    return tuple(op for op, dtypes in OP_DTYPES.items() if dtype_name in dtypes)
LAYOUTS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}


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


# ------------------------------------------------------------------------ recording launches


@dataclass
class Launch:
    """One kernel launch an op made: the function, its grid and arguments, and where it came from."""

    fn: object
    grid: tuple
    args: tuple
    kwargs: dict
    op: str
    direction: str
    shape: str
    dtype: str
    layout: str


def _kernel_functions() -> list:
    from triton.runtime.jit import JITFunction

    from fastwsol.kernels import alignment_loss, attentive_dropout, consistency_loss

    found = {id(value): value for module in (alignment_loss, attentive_dropout, consistency_loss)
             for value in vars(module).values() if isinstance(value, JITFunction)}
    return list(found.values())


@contextlib.contextmanager
def recording(sink: list, context: dict):
    """Within: kernel launches are appended to ``sink`` (with ``context``'s labels), not run."""
    from fastwsol.kernels import runtime

    functions = _kernel_functions()
    for fn in functions:
        def run(*args, grid, warmup, fn=fn, **kwargs):
            sink.append(Launch(fn, tuple(grid), args, kwargs, **context))
        fn.run = run
    saved_check = runtime.check_runnable
    runtime.check_runnable = lambda tensor, op: None
    try:
        yield
    finally:
        runtime.check_runnable = saved_check
        for fn in functions:
            del fn.run


def _empty(shape, dtype, layout):
    return torch.empty(shape, dtype=dtype).contiguous(memory_format=LAYOUTS[layout])


def _op_calls(shapes, dtype_name, layout):
    """(op, direction, call) for every launch path of the ops built in ``dtype_name`` (``OP_DTYPES``)
    at ``shapes``: uninitialised CPU tensors of the real shape (never touched: the kernels are
    recorded, not run). ``UPCAST_DTYPE``: the losses' calls from the training objective (fp32
    weight, a bf16 F read as F.float())."""
    from fastwsol.kernels import alignment_loss, attentive_dropout, consistency_loss, feature_losses

    upcast = dtype_name == UPCAST_DTYPE
    dtype = torch.bfloat16 if upcast else DTYPES[dtype_name]
    feature = _empty(shapes.feature, dtype, layout)
    weight = torch.empty((shapes.classes, shapes.channels), dtype=torch.float32 if upcast else dtype)
    target = torch.zeros(shapes.batch, dtype=torch.int64)
    maps = [torch.empty((shapes.batch, shapes.size * shapes.size)) for _ in range(4)]
    x = _empty(shapes.dropout_input, dtype, layout)
    uniform = torch.empty((shapes.batch, 1, shapes.dropout_size, shapes.dropout_size))
    keep = torch.empty((shapes.batch, 1, shapes.dropout_size, shapes.dropout_size), dtype=dtype)
    scalar = torch.ones(())
    seed = torch.ones(1, dtype=torch.int64)
    fine = shapes.fine_grained
    calls = {
        "alignment_loss": [
            ("forward", lambda: alignment_loss._forward(feature, weight, target, 0.6, 0.1, fine, upcast=upcast)),
            ("backward", lambda: alignment_loss._backward(scalar, scalar, feature, weight, target, *maps)),
        ],
        "attentive_dropout": [
            ("forward", lambda: attentive_dropout.attentive_dropout_op(x, 0.8, 0.5, seed, None)),
            ("forward", lambda: attentive_dropout.attentive_dropout_op(x, 0.8, 0.5, None, uniform)),
            ("backward", lambda: attentive_dropout.attentive_dropout_backward_op(x, keep)),
        ],
        "consistency_loss": [
            ("forward", lambda: consistency_loss.consistency_loss_op(feature, feature, upcast)),
            ("backward", lambda: consistency_loss.consistency_loss_backward_op(scalar, feature, feature)),
        ],
        "feature_losses": [
            ("backward", lambda: feature_losses._feature_losses_backward_op(
                scalar, scalar, scalar, feature, feature, weight, target, *maps)),
        ],
    }
    assert {op: tuple(dict.fromkeys(d for d, _ in c)) for op, c in calls.items()} == OP_DIRECTIONS
    return [(op, direction, call) for op, dtypes in OP_DTYPES.items() if dtype_name in dtypes
            for direction, call in calls[op]]


def record_launches(shapes_table=None) -> list[Launch]:
    """Every launch of every op at every shape, dtype and layout."""
    launches: list[Launch] = []
    for shape_name, shapes in (shapes_table or REAL_SHAPES).items():
        for dtype_name in dict.fromkeys(d for dtypes in OP_DTYPES.values() for d in dtypes):
            for layout in LAYOUTS:
                for op, direction, call in _op_calls(shapes, dtype_name, layout):
                    context = {"op": op, "direction": direction, "shape": shape_name, "dtype": dtype_name,
                               "layout": layout}
                    with recording(launches, context):
                        call()
    return launches


# ------------------------------------------------------------------------------- building


def specialise(launch: Launch, arch: int):
    """(ASTSource, options) exactly as Triton's launcher builds them for these arguments on ``sm_<arch>``."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import make_backend
    from triton.runtime.jit import create_function_from_signature

    fn = launch.fn
    backend = make_backend(GPUTarget("cuda", arch, THREADS_PER_WARP))
    kwargs = {"debug": False, **launch.kwargs}
    binder = create_function_from_signature(fn.signature, fn.params, backend)
    bound_args, specialization, options = binder(*launch.args, **kwargs)
    options, signature, constexprs, attrs = fn._pack_args(backend, kwargs, bound_args, specialization, options)
    return triton.compiler.ASTSource(fn, signature, constexprs, attrs), options


def specialisation_key(launch: Launch) -> str:
    """What selects a distinct binary: the kernel and its specialised signature, constants, attributes and options."""
    source, options = specialise(launch, 90)
    return repr((launch.fn.fn.__qualname__, sorted(source.signature.items()),
                 sorted(map(repr, source.constants.items())),
                 sorted(map(repr, source.attrs.items())), options.num_warps, options.num_stages))


# The operand type of each tensor-core instruction (sm_90 wgmma, sm_80 mma) with an fp32 accumulator
_MMA_TYPES = re.compile(r"\b(?:wgmma\.mma_async|mma)\.sync\.aligned\.m\d+n\d+k\d+(?:\.row\.col)?\.f32\.([a-z0-9]+)\.")
_APPROX_OPS = re.compile(r"\b(?:sqrt\.approx|rsqrt\.approx|rcp\.approx|div\.full|div\.approx)\.")
_VECTOR_LOADS = re.compile(r"\bld\.global(?:\.[a-z]+)*\.v[248]\.")
_SCALAR_LOADS = re.compile(r"\bld\.global(?:\.[a-z]+)*\.(?:b|u|f|s)(?:8|16|32|64)\b")
_REGISTERS = re.compile(r"Used (\d+) registers")
_SPILLS = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads")
_SMEM = re.compile(r"(\d+) bytes smem")


@dataclass
class BuildRecord:
    """One distinct kernel binary built for one arch, with the launches that select it."""

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
    vector_loads: int  # ld.global.v2/v4 instructions
    scalar_loads: int
    loop_barriers: int  # bar.sync instructions inside loops (a cross-warp reduction per iteration)
    mma_types: list  # operand types of the tensor-core instructions (bf16, tf32, ...)
    constant_one: list  # integer arguments specialised to the constant 1 (unit strides)
    divisible_by_16: list  # arguments with the 16-divisibility attribute (pointers, strides, sizes)
    launches: list  # [{op, direction, shape, dtype, layout, grid, waves}]

    @property
    def spill_bytes(self) -> int:
        return self.spill_store_bytes + self.spill_load_bytes


def loop_barriers(ptx: str) -> int:
    """``bar.sync`` instructions between a label and a later branch back to it (loop bodies)."""
    lines = ptx.splitlines()
    labels = {m.group(1): i for i, line in enumerate(lines) if (m := re.match(r"^(\$L__BB\d+_\d+):", line.strip()))}
    in_loop: set[int] = set()
    for i, line in enumerate(lines):
        branch = re.search(r"\bbra(?:\.uni)?\s+(\$L__BB\d+_\d+);", line)
        if branch and labels.get(branch.group(1), i) < i:
            in_loop.update(range(labels[branch.group(1)], i))
    return sum(1 for i in in_loop if re.search(r"\b(?:bar|barrier)\.sync\b", lines[i]))


def theoretical_occupancy(
    registers: int, shared_memory: int, num_warps: int, limits: SMLimits
) -> tuple[float, int, str]:
    """(occupancy, blocks per SM, limiting resource) from per-thread registers and per-block shared memory."""
    warp_registers = math.ceil(max(registers, 1) * THREADS_PER_WARP / limits.register_unit) * limits.register_unit
    bounds = {
        "warps": limits.max_warps // num_warps,
        "blocks": limits.max_blocks,
        "registers": (limits.registers // warp_registers) // num_warps,
    }
    if shared_memory:
        block_shared = (
            math.ceil((shared_memory + limits.shared_reserved_per_block) / limits.shared_unit) * limits.shared_unit
        )
        bounds["shared memory"] = limits.shared_memory // block_shared
    limited_by = min(bounds, key=bounds.get)
    blocks = bounds[limited_by]
    return blocks * num_warps / limits.max_warps, blocks, limited_by


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


def _kernel_name(launch: Launch, members: list[Launch]) -> str:
    """``op/kernel[dtype,layout:shapes]`` from the launches that select one binary."""
    def joined(field):
        return "+".join(dict.fromkeys(getattr(m, field) for m in members))

    module = launch.fn.fn.__module__.rsplit(".", 1)[-1]
    return f"{module}/{launch.fn.fn.__name__}[{joined('dtype')},{joined('layout')}:{joined('shape')}]"


def _label(launch: Launch) -> dict:
    return {"op": launch.op, "direction": launch.direction, "shape": launch.shape, "dtype": launch.dtype,
            "layout": launch.layout, "grid": list(launch.grid)}


def distinct_launches(launches: list[Launch]) -> list[tuple[str, Launch, list[dict]]]:
    """(name, a representative launch, every launch's labels) per distinct binary."""
    groups: dict[str, list[Launch]] = {}
    for launch in launches:
        groups.setdefault(specialisation_key(launch), []).append(launch)
    out, seen = [], set()
    for members in groups.values():
        name = _kernel_name(members[0], members)
        while name in seen:  # the same labels, another binary (e.g. with and without a uniform draw)
            name += "'"
        seen.add(name)
        out.append((name, members[0], [_label(m) for m in members]))
    return out


def build(name: str, launch: Launch, labels: list[dict], arch: int) -> BuildRecord:
    import triton
    from triton.backends.compiler import GPUTarget

    source, options = specialise(launch, arch)
    names = launch.fn.arg_names
    compiled = triton.compile(source, target=GPUTarget("cuda", arch, THREADS_PER_WARP), options=options.__dict__)
    ptx = compiled.asm["ptx"]
    report = parse_ptxas_log(run_ptxas(ptx, arch))
    num_warps = compiled.metadata.num_warps
    shared = compiled.metadata.shared + report["static_shared"]
    occupancy, blocks, limited_by = theoretical_occupancy(report["registers"], shared, num_warps, SM_LIMITS[arch])
    return BuildRecord(
        kernel=name, arch=arch, num_warps=num_warps, registers=report["registers"],
        spill_store_bytes=report["spill_store_bytes"], spill_load_bytes=report["spill_load_bytes"],
        shared_memory=shared, occupancy=occupancy, blocks_per_sm=blocks, limited_by=limited_by,
        ptx_lines=ptx.count("\n"), cubin_bytes=len(compiled.asm["cubin"]), approx_ops=len(_APPROX_OPS.findall(ptx)),
        vector_loads=len(_VECTOR_LOADS.findall(ptx)), scalar_loads=len(_SCALAR_LOADS.findall(ptx)),
        loop_barriers=loop_barriers(ptx), mma_types=sorted(set(_MMA_TYPES.findall(ptx))),
        constant_one=[n for i, n in enumerate(names)
                      if source.constants.get((i,)) == 1 and not launch.fn.params[i].is_constexpr],
        divisible_by_16=[n for i, n in enumerate(names) if ["tt.divisibility", 16] in source.attrs.get((i,), [])],
        # waves: the launch's programs over those resident at once on all the arch's SMs
        launches=[{**label, "waves": math.prod(label["grid"]) / (SM_COUNT[arch] * blocks)} for label in labels],
    )


def _compilable() -> bool:
    from triton.runtime.jit import JITFunction

    from fastwsol.kernels import alignment_loss

    return isinstance(alignment_loss._position_stats_kernel, JITFunction)


def build_in_process(archs=ARCHS) -> list[dict]:
    distinct = distinct_launches(record_launches())
    return [asdict(build(name, launch, labels, arch)) for name, launch, labels in distinct for arch in archs]


def build_all(archs=ARCHS, timeout: float = 900) -> list[dict]:
    """Records (as dicts) for every distinct binary × arch; in a ``TRITON_INTERPRET=0`` subprocess
    when the kernels were defined under the interpreter."""
    if os.environ.get("TRITON_INTERPRET", "0") == "0" and _compilable():
        return build_in_process(archs)
    env = {**os.environ, "TRITON_INTERPRET": "0"}
    command = [sys.executable, "-m", "fastwsol.kernel_build", "--json", "--arch", *map(str, archs)]
    # run from the folder holding this fastwsol, so the subprocess builds these same kernels
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout,
                          cwd=Path(__file__).resolve().parents[1])
    if done.returncode != 0:
        raise RuntimeError(f"the GPU build subprocess failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(done.stdout)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the records as JSON")
    parser.add_argument("--arch", type=int, nargs="+", default=list(ARCHS), choices=sorted(SM_LIMITS))
    args = parser.parse_args(argv)
    records = build_all(tuple(args.arch))
    if args.json:
        print(json.dumps(records))
        return
    for r in records:
        print(f"{r['kernel']:<48} sm_{r['arch']} warps {r['num_warps']} regs {r['registers']:>3} "
              f"spill {r['spill_store_bytes'] + r['spill_load_bytes']} occupancy {r['occupancy']:.0%} "
              f"v-loads {r['vector_loads']} s-loads {r['scalar_loads']} launches {len(r['launches'])}")


if __name__ == "__main__":
    main()
