"""The fused Triton alignment loss against the reference (``fastwsol.method.reference``), under
the Triton interpreter (tests/conftest.py sets TRITON_INTERPRET=1 before any kernel import).

Every case checks the forward (L_sim, L_norm) and both gradients (∂/∂feature, ∂/∂fc_weight)
of ``a·L_sim + b·L_norm`` (distinct upstream weights, so both backward paths are seen).

Grid. Axes: B ∈ {1, 3}, D ∈ {7, 64, 300}, H×W ∈ {7×7, 14×14, 13×17}, C ∈ {1, 5, 37},
fine_grained ∈ {off, on}, layout ∈ {NCHW, channels_last}, dtype ∈ {fp32, bf16}. The cartesian
grid (432 cases) is too slow for the interpreter, so:
- ``PAIRWISE_CASES``: a covering array built below — every pair of values of any two axes
  occurs in at least one case (13 cases, the large shapes included);
- the full fine_grained × layout × dtype grid at a tiny shape (8 cases);
- the full D × H×W × C grid (27 cases) at B=2, fp32, fine-grained, NCHW;
- edge cases: repeated classes in a batch, empty fg/bg regions (similarity and norm masks),
  constant norm maps (a single vector repeated, with and without sign flips), zero feature
  vectors, a zero weight row, C = 300 (more classes than one class tile), 28×28 maps, fp16;
- the fine-grained class max near 0: the one-pass bf16 dot's sign is wrong at some positions,
  the recheck lists exactly those within its error bound and the masks come out as the float64
  reference's (the bound itself is checked against the dot it bounds).

Tolerances (``fastwsol.kernel_cases.ALIGNMENT_TOLERANCES``, shared with ``fastwsol check-gpu``):
every case is compared with the reference run in float64 on the same values (a 16-bit input
upcast); fp32 inputs are held to fp32's bounds, bf16 and fp16 inputs to bf16's. bf16
fine-grained runs at every C (1, 5, 37). The interpreter's ``tl.dot`` multiplies bf16 bit
patterns, so there the class dot's bf16 operands go in as fp32 (the same values: exact products,
fp32 sums); tests/kernels/test_gpu_build.py checks the GPU build's dot is bf16.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from fastwsol.kernel_cases import ALIGNMENT_TOLERANCES, DTYPE_LAYOUT_CASES, DTYPES, LAYOUTS, UPSTREAM
from fastwsol.kernels import alignment_loss as kernel
from fastwsol.kernels.runtime import TritonUnavailableError, interpreter_enabled
from fastwsol.method import reference

# The kernels run on CUDA when there is a GPU and the interpreter is off; the reference on CPU.
DEVICE = "cpu" if interpreter_enabled() or not torch.cuda.is_available() else "cuda"

FG, BG = 0.6, 0.2  # the CUB config's τ_fg, τ_bg region (any values in (0, 1) exercise the same code)

AXES = {
    "batch": [1, 3],
    "channels": [7, 64, 300],
    "size": [(7, 7), (14, 14), (13, 17)],
    "classes": [1, 5, 37],
    "fine_grained": [False, True],
    "layout": list(LAYOUTS),
    "dtype": list(DTYPES.values()),
}


def _pairwise_cases() -> list[tuple]:
    """Greedy covering array: add the cheapest case that covers most uncovered value pairs."""
    axes = list(AXES.values())
    pairs = lambda case: {(i, case[i], j, case[j]) for i, j in itertools.combinations(range(len(axes)), 2)}  # noqa: E731
    candidates = list(itertools.product(*axes))
    uncovered = set().union(*(pairs(c) for c in candidates))
    cases = []
    while uncovered:
        best = max(candidates, key=lambda c: (len(pairs(c) & uncovered), -c[0] * c[1] * c[2][0] * c[2][1]))
        cases.append(best)
        uncovered -= pairs(best)
    return cases


PAIRWISE_CASES = _pairwise_cases()


def _case_id(case: tuple) -> str:
    batch, channels, (height, width), classes, fine_grained, layout, dtype = case
    return (f"B{batch}-D{channels}-{height}x{width}-C{classes}-{'fine' if fine_grained else 'target'}"
            f"-{layout}-{str(dtype).removeprefix('torch.')}")


def _inputs(batch, channels, size, classes, dtype, layout, seed=0):
    generator = torch.Generator().manual_seed(seed)
    feature = torch.randn(batch, channels, *size, generator=generator).to(dtype)
    weight = torch.randn(classes, channels, generator=generator).to(dtype)
    target = torch.randint(0, classes, (batch,), generator=generator)
    return feature.contiguous(memory_format=LAYOUTS[layout]), weight, target


def _run(fn, feature, weight, target, fine_grained, fg=FG, bg=BG, device="cpu"):
    feature = feature.detach().to(device).clone(memory_format=torch.preserve_format).requires_grad_()
    weight = weight.detach().to(device).clone().requires_grad_()
    loss_sim, loss_norm = fn(feature, weight, target.to(device), fg_threshold=fg, bg_threshold=bg, fine_grained=fine_grained)
    (UPSTREAM[0] * loss_sim + UPSTREAM[1] * loss_norm).backward()
    return tuple(t.cpu() for t in (loss_sim.detach(), loss_norm.detach(), feature.grad)) + (weight.grad.cpu(),)


def _check(feature, weight, target, fine_grained, fg=FG, bg=BG):
    """Kernel on the given tensors vs the float64 reference on the same values."""
    got = _run(kernel.alignment_loss, feature, weight, target, fine_grained, fg, bg, device=DEVICE)
    want = _run(reference.alignment_loss, feature.double(), weight.double(), target, fine_grained, fg, bg)
    tolerance = ALIGNMENT_TOLERANCES["fp32" if feature.dtype == torch.float32 else "bf16"]
    loss_tol, grad_tol = tolerance["loss"], tolerance["grad"]
    for name, g, w in zip(("loss_sim", "loss_norm"), got[:2], want[:2]):
        assert g.dtype == feature.dtype, name
        assert torch.isfinite(g), name
        torch.testing.assert_close(g.double(), w, atol=loss_tol, rtol=0, msg=lambda m: f"{name}: {m}")
    for name, g, w, source in zip(("grad_feature", "grad_weight"), got[2:], want[2:], (feature, weight)):
        assert g.dtype == source.dtype and g.shape == source.shape, name
        scale = max(float(w.abs().max()), 1e-30)
        torch.testing.assert_close(g.double(), w, atol=grad_tol * scale, rtol=0, msg=lambda m: f"{name}: {m}")
    if feature.dim() == 4 and feature.is_contiguous(memory_format=torch.channels_last) and not feature.is_contiguous():
        assert got[2].is_contiguous(memory_format=torch.channels_last), "grad_feature lost channels_last"
    return got, want


@pytest.mark.parametrize("case", PAIRWISE_CASES, ids=_case_id)
def test_pairwise_grid(case):
    batch, channels, size, classes, fine_grained, layout, dtype = case
    feature, weight, target = _inputs(batch, channels, size, classes, dtype, layout)
    _check(feature, weight, target, fine_grained)


@pytest.mark.parametrize("dtype,layout", DTYPE_LAYOUT_CASES, ids="-".join)
@pytest.mark.parametrize("fine_grained", [False, True], ids=["target", "fine"])
def test_mode_layout_dtype_grid(fine_grained, dtype, layout):
    feature, weight, target = _inputs(3, 7, (7, 7), 37, DTYPES[dtype], layout, seed=1)
    _check(feature, weight, target, fine_grained)


@pytest.mark.parametrize("classes", AXES["classes"])
@pytest.mark.parametrize("size", AXES["size"], ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("channels", AXES["channels"])
def test_shape_grid(channels, size, classes):
    feature, weight, target = _inputs(2, channels, size, classes, torch.float32, "nchw", seed=2)
    _check(feature, weight, target, fine_grained=True)


def test_pairwise_cases_cover_every_axis_value():
    for position, values in enumerate(AXES.values()):
        assert {case[position] for case in PAIRWISE_CASES} == set(values)


@pytest.mark.parametrize("target", [[2, 2, 2], [1, 0, 1]], ids=["all-same", "two-same"])
def test_repeated_classes_accumulate_weight_grad(target):
    feature, weight, _ = _inputs(3, 16, (7, 7), 4, torch.float32, "nchw", seed=3)
    got, _ = _check(feature, weight, torch.tensor(target), fine_grained=True)
    untouched = sorted(set(range(4)) - set(target))
    assert torch.all(got[3][untouched] == 0)


def test_empty_similarity_regions():
    """τ_fg = 1 and τ_bg = 0: F̂ ∈ [0, 1] is never > 1 nor < 0, so both sim masks are empty → L_sim = 0."""
    feature, weight, target = _inputs(2, 16, (7, 7), 5, torch.float32, "nchw", seed=4)
    got, _ = _check(feature, weight, target, fine_grained=True, fg=1.0, bg=0.0)
    assert got[0] == 0


@pytest.mark.parametrize("fine_grained", [False, True], ids=["target", "fine"])
def test_empty_norm_regions(fine_grained):
    """Positive features and weights: every S > 0, so bg_norm is empty; the mean over it is 0."""
    generator = torch.Generator().manual_seed(5)
    feature = torch.rand(2, 16, 7, 7, generator=generator)
    weight = torch.rand(5, 16, generator=generator)
    _check(feature, weight, torch.tensor([0, 3]), fine_grained)


@pytest.mark.parametrize("sign_flips", [False, True], ids=["same-vector", "sign-flips"])
def test_constant_norm_map(sign_flips):
    """One vector repeated at every position: max − min = 0, F̂ = 0, gradient through eps = 1e-15."""
    generator = torch.Generator().manual_seed(6)
    vector = torch.randn(2, 16, 1, 1, generator=generator)
    sign = torch.where(torch.rand(2, 1, 7, 7, generator=generator) < 0.5, -1.0, 1.0) if sign_flips else 1.0
    feature = (vector * sign).expand(2, 16, 7, 7).contiguous()
    weight = torch.randn(5, 16, generator=generator)
    _check(feature, weight, torch.tensor([1, 4]), fine_grained=True)


@pytest.mark.parametrize("fine_grained", [False, True], ids=["target", "fine"])
def test_zero_feature_vectors(fine_grained):
    """Zero vectors: norm 0 (the min), S = 0 (in no norm mask), F.normalize's 1e-12 clamp in the gradient."""
    feature, weight, target = _inputs(3, 16, (7, 7), 5, torch.float32, "nchw", seed=7)
    feature[0, :, 2, 3] = 0
    feature[1, :, :3] = 0
    feature[2] = 0  # a whole image: constant zero norm map
    _check(feature, weight, target, fine_grained)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_more_classes_than_one_class_tile(layout):
    """C = 300 > the 256-class tile: the class max spans two class passes over F. Positive
    features against negative rows 0-255 make the first tile's similarities all negative, so the
    sign of S* (the norm masks) is decided by the random rows 256-299 of the second tile."""
    assert kernel.MAX_BLOCK_CLASSES == 256, "the case is built around a 256-class tile"
    generator = torch.Generator().manual_seed(12)
    feature = torch.rand(2, 16, 7, 7, generator=generator) - 0.1
    weight = torch.cat([-torch.rand(256, 16, generator=generator) - 1, torch.randn(44, 16, generator=generator)])
    _check(feature.contiguous(memory_format=LAYOUTS[layout]), weight, torch.tensor([3, 280]), fine_grained=True)


def test_zero_weight_row():
    feature, weight, _ = _inputs(2, 16, (7, 7), 3, torch.float32, "nchw", seed=8)
    weight[1] = 0
    _check(feature, weight, torch.tensor([1, 2]), fine_grained=True)


@pytest.mark.parametrize("fine_grained", [False, True], ids=["target", "fine"])
def test_resnet_map_size(fine_grained):
    """28×28 (ResNet50's map): 784 positions, the per-image kernel's 1024-wide block."""
    feature, weight, target = _inputs(2, 8, (28, 28), 5, torch.float32, "channels_last", seed=13)
    _check(feature, weight, target, fine_grained)


def test_float16():
    feature, weight, target = _inputs(2, 64, (7, 7), 37, torch.float16, "channels_last", seed=9)
    _check(feature, weight, target, fine_grained=True)


def test_opcheck():
    feature, weight, target = (t.to(DEVICE) for t in _inputs(2, 16, (7, 7), 5, torch.float32, "channels_last", seed=10))
    feature.requires_grad_()
    weight.requires_grad_()
    torch.library.opcheck(kernel._alignment_loss_op, (feature, weight, target, FG, BG, True))
    _, _, *maps = kernel._alignment_loss_op(feature, weight, target, FG, BG, False)
    torch.library.opcheck(kernel._alignment_loss_op, (feature, weight, target, FG, BG, False))
    upstream = tuple(torch.tensor(u, device=DEVICE) for u in UPSTREAM)
    torch.library.opcheck(kernel._alignment_loss_backward_op, (*upstream, feature.detach(), weight.detach(), target, *maps))


def test_compiles_without_graph_break():
    feature, weight, target = (t.to(DEVICE) for t in _inputs(2, 16, (7, 7), 5, torch.float32, "nchw", seed=11))

    def step(f, w):
        loss_sim, loss_norm = kernel.alignment_loss(f, w, target, fg_threshold=FG, bg_threshold=BG, fine_grained=True)
        return loss_sim + loss_norm

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    f = feature.clone().requires_grad_()
    w = weight.clone().requires_grad_()
    compiled(f, w).backward()
    f_ref = feature.clone().requires_grad_()
    w_ref = weight.clone().requires_grad_()
    step(f_ref, w_ref).backward()
    torch.testing.assert_close(f.grad, f_ref.grad)
    torch.testing.assert_close(w.grad, w_ref.grad)


def test_cpu_without_interpreter_is_a_clear_error(monkeypatch):
    feature, weight, target = _inputs(1, 7, (7, 7), 5, torch.float32, "nchw")
    monkeypatch.setenv("TRITON_INTERPRET", "0")  # read at call time
    with pytest.raises(TritonUnavailableError, match="TRITON_INTERPRET=1"):
        kernel.alignment_loss(feature, weight, target, fg_threshold=FG, bg_threshold=BG, fine_grained=True)


@pytest.mark.parametrize("classes", [1, 5])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_bf16_fine_grained_few_classes(classes, layout):
    """bf16 fine-grained at C = 1 and 5: class maxima near 0 and negative (the interpreter's
    bf16 dot gave L_norm −0.43 against −0.025 at C = 1)."""
    feature, weight, target = _inputs(2, 16, (5, 6), classes, torch.bfloat16, layout, seed=14)
    _check(feature, weight, target, fine_grained=True)


class _RecordOps(torch.utils._python_dispatch.TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


def test_weight_grad_is_deterministic():
    """Repeated classes: ∂L/∂w sums images by a one-hot product — never an accumulating scatter
    (index_add_/index_put_/scatter_add are atomic adds on CUDA, not reproducible run to run) —
    equal to the reference and bitwise equal across runs."""
    feature, weight, _ = _inputs(4, 16, (5, 6), 3, torch.float32, "nchw", seed=15)
    target = torch.tensor([2, 0, 2, 2])
    first, _ = _check(feature, weight, target, fine_grained=True)
    device_args = [t.to(DEVICE) for t in (feature, weight, target)]
    *_, norm, sim, norm_coef, sim_coef = kernel._forward(*device_args, FG, BG, True)
    upstream = [torch.tensor(u, device=DEVICE) for u in UPSTREAM]
    with _RecordOps() as recorder:  # the backward's body (inside the opaque custom op)
        kernel._backward(*upstream, *device_args, norm, sim, norm_coef, sim_coef)
    scatters = [op for op in recorder.ops if any(k in op for k in ("index_add", "index_put", "scatter_add", "scatter_reduce"))]
    assert not scatters, scatters
    second = _run(kernel.alignment_loss, feature, weight, target, True, device=DEVICE)
    assert torch.equal(first[3], second[3]) and torch.equal(first[2], second[2])


class _RecheckSpy:
    """Stands in for ``_class_max_recheck_kernel``: records the recheck list, then launches the
    kernel unless ``skip`` (the one-pass signs stay)."""

    def __init__(self, skip=False):
        self.kernel, self.skip, self.listed = kernel._class_max_recheck_kernel, skip, None

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            count, recheck = args[4], args[5]
            self.listed = set(recheck[: int(count[0])].tolist())
            if not self.skip:
                self.kernel[grid](*args, **kwargs)
        return launch


def _norm_regions(feature, weight, target):
    """Per position of the flat B·HW maps: the kernel's norm-mask region (+1 fg, −1 bg, 0 none, from
    the sign of ∂L/∂F̂, module docstring of position_maps), and whether it is comparable (not the
    image's i_min or i_max, whose ∂L/∂n carries the min/max terms)."""
    norm, _, norm_coef, _ = kernel.position_maps(feature, weight, target, fg_threshold=FG, bg_threshold=BG,
                                                 fine_grained=True)
    comparable = torch.ones_like(norm, dtype=torch.bool)
    comparable[torch.arange(norm.shape[0]), norm.argmin(dim=1)] = False
    comparable[torch.arange(norm.shape[0]), norm.argmax(dim=1)] = False
    return -torch.sign(norm_coef).flatten(), comparable.flatten()


def _one_pass_class_max(feature, weight):
    """max_c ⟨bf16(ŵ_c), bf16(F_u)⟩ in float64, B·HW: what the bf16 dot sums (exact products)."""
    w_unit = torch.nn.functional.normalize(weight.double(), dim=1).float().bfloat16().double()
    return torch.einsum("cd,bdhw->bchw", w_unit, feature.bfloat16().double()).amax(dim=1).flatten()


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_class_max_near_zero_is_rechecked(dtype, monkeypatch):
    """Half the positions have every class dot tiny (F_u orthogonal to all ŵ_c but for ±δ·ŵ_0):
    the one-pass dot gets the sign of S* wrong at some; the recheck lists those, and only positions
    whose |max_c ⟨ŵ_c, F_u⟩| is within twice the dot's error bound, and the norm masks are the
    float64 reference's at every position."""
    generator = torch.Generator().manual_seed(16)
    channels, classes = 64, 3
    weight = torch.randn(classes, channels, generator=generator, dtype=torch.float64)
    basis, _ = torch.linalg.qr(torch.nn.functional.normalize(weight, dim=1).t())  # D×C, orthonormal
    feature = torch.randn(2, channels, 6, 6, generator=generator, dtype=torch.float64)
    flat = feature.permute(0, 2, 3, 1).reshape(-1, channels)
    near_zero = torch.arange(flat.shape[0]) % 2 == 0
    delta = 1e-4 * torch.where(torch.rand(flat.shape[0], generator=generator) < 0.5, -1.0, 1.0)
    unit0 = torch.nn.functional.normalize(weight[0], dim=0)
    projected = flat - (flat @ basis) @ basis.t() + delta[:, None] * flat.norm(dim=1, keepdim=True) * unit0
    flat = torch.where(near_zero[:, None], projected, flat)
    feature = flat.reshape(2, 6, 6, channels).permute(0, 3, 1, 2).to(DTYPES[dtype]).contiguous()
    weight = weight.to(DTYPES[dtype])
    target = torch.tensor([0, 2])

    exact = reference.max_class_similarity(feature.double(), weight.double()).flatten()
    assert int((torch.sign(_one_pass_class_max(feature, weight)) != torch.sign(exact)).sum()) > 0  # a real case
    spy = _RecheckSpy()
    monkeypatch.setattr(kernel, "_class_max_recheck_kernel", spy)
    regions, comparable = _norm_regions(feature, weight, target)
    assert torch.equal(regions[comparable], torch.sign(exact)[comparable])
    flipped = set(torch.nonzero(torch.sign(_one_pass_class_max(feature, weight)) != torch.sign(exact)).flatten().tolist())
    w_unit, _ = kernel._unit_weight(weight)
    beta_bf16, beta, alpha = kernel._dot_error_bound(w_unit, w_unit.to(torch.bfloat16))
    norm = feature.double().norm(dim=1).flatten()
    bound = (beta_bf16 if dtype == "bf16" else beta) * norm + alpha
    near_bound = set(torch.nonzero((exact * norm).abs() <= 2 * bound).flatten().tolist())
    assert flipped <= spy.listed <= near_bound

    monkeypatch.setattr(kernel, "_class_max_recheck_kernel", _RecheckSpy(skip=True))
    regions, comparable = _norm_regions(feature, weight, target)
    assert not torch.equal(regions[comparable], torch.sign(exact)[comparable])  # the recheck is what fixes them


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("channels", [7, 300])
def test_dot_error_bound_holds(channels, dtype):
    """|one-pass dot − exact dot| ≤ β·‖F_u‖ + α for every class and position (β_bf16 for a bf16 F;
    the products and their float64 sum: the rounding terms of the bound), and the bound is not
    loose by more than ~30× (it decides how many positions the recheck takes)."""
    generator = torch.Generator().manual_seed(17)
    weight = torch.randn(37, channels, generator=generator) * torch.rand(37, 1, generator=generator)
    feature = (torch.randn(500, channels, generator=generator) * 3).to(dtype)
    w_unit, _ = kernel._unit_weight(weight)
    beta_bf16, beta, alpha = kernel._dot_error_bound(w_unit, w_unit.to(torch.bfloat16)).double()
    fast = feature.bfloat16().double() @ w_unit.bfloat16().double().t()
    exact = feature.double() @ w_unit.double().t()
    bound = (beta_bf16 if dtype == torch.bfloat16 else beta) * feature.double().norm(dim=1) + alpha
    error = (fast - exact).abs().amax(dim=1)
    assert torch.all(error <= bound)
    assert float((error / bound).max()) > 1 / 30
