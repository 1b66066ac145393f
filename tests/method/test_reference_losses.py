"""The reference path against hand-computed cases, a brute-force per-position loop, and gradcheck."""

import math

import pytest
import torch

from fastwsol import ops
from fastwsol.method import reference

EPS = 1e-15


def tiny_case():
    """B=1, D=2, 1×4 positions; norms 5, 2, 1, 3 → F̂ = (n − 1)/4 = [1, .25, 0, .5]."""
    feature = torch.tensor([[3.0, 0.0, 1.0, 0.0], [4.0, 2.0, 0.0, -3.0]], dtype=torch.float64).view(1, 2, 1, 4)
    fc_weight = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    return feature, fc_weight, torch.tensor([0])


def test_hand_computed_target_only():
    feature, fc_weight, target = tiny_case()
    # S_0 = [.6, 0, 1, 0]; fg_sim = {u0} (F̂ > .6), bg_sim = {u2} (F̂ < .1) → L_sim = 1 − .6
    # fg_norm = S > 0 = {u0, u2}, bg_norm = {} → L_norm = 0 − (1 + 0)/2
    loss_sim, loss_norm = ops.alignment_loss(
        feature, fc_weight, target, fg_threshold=0.6, bg_threshold=0.1, fine_grained=False, backend="reference"
    )
    assert loss_sim.item() == pytest.approx(0.4, abs=1e-12)
    assert loss_norm.item() == pytest.approx(-0.5, abs=1e-12)


def test_hand_computed_fine_grained():
    feature, fc_weight, target = tiny_case()
    # S_1 = [.8, 1, 0, −1] → S* = max(S_0, S_1) = [.8, 1, 1, 0]: fg = {u0, u1, u2}, bg = {} (u3 is 0: neither)
    _, loss_norm = ops.alignment_loss(
        feature, fc_weight, target, fg_threshold=0.6, bg_threshold=0.1, fine_grained=True, backend="reference"
    )
    assert loss_norm.item() == pytest.approx(-(1 + 0.25 + 0) / 3, abs=1e-12)


def brute_force_alignment_loss(feature, fc_weight, target, fg_threshold, bg_threshold, fine_grained):
    """docs/method.md §5 written out position by position in plain Python floats."""
    B, D, H, W = feature.shape
    f = feature.tolist()
    w = fc_weight.tolist()

    def l2(v):
        return math.sqrt(sum(x * x for x in v))

    def cos(a, b):
        return sum(x * y for x, y in zip(a, b)) / (max(l2(a), 1e-12) * max(l2(b), 1e-12))

    sims, norms = [], []
    for b in range(B):
        vectors = [[f[b][d][i][j] for d in range(D)] for i in range(H) for j in range(W)]
        n = [l2(v) for v in vectors]
        shifted = [x - min(n) for x in n]
        fhat = [x / (max(shifted) + EPS) for x in shifted]
        s = [cos(w[int(target[b])], v) for v in vectors]
        s_star = [max(cos(wc, v) for wc in w) for v in vectors] if fine_grained else s

        def region_mean(values, mask):
            return sum(v for v, m in zip(values, mask) if m) / (sum(mask) + EPS)

        sims.append(
            region_mean(s, [x < bg_threshold for x in fhat]) - region_mean(s, [x > fg_threshold for x in fhat])
        )
        norms.append(region_mean(fhat, [x < 0 for x in s_star]) - region_mean(fhat, [x > 0 for x in s_star]))
    return sum(sims) / B, sum(norms) / B


@pytest.mark.parametrize("fine_grained", [False, True])
@pytest.mark.parametrize("shape", [(1, 3, 2, 2), (3, 5, 3, 4), (2, 8, 7, 7)])
def test_matches_brute_force(shape, fine_grained):
    g = torch.Generator().manual_seed(sum(shape))
    feature = torch.randn(shape, generator=g, dtype=torch.float64)
    fc_weight = torch.randn(4, shape[1], generator=g, dtype=torch.float64)
    target = torch.randint(0, 4, (shape[0],), generator=g)
    got = ops.alignment_loss(
        feature, fc_weight, target, fg_threshold=0.6, bg_threshold=0.2, fine_grained=fine_grained, backend="reference"
    )
    expected = brute_force_alignment_loss(feature, fc_weight, target, 0.6, 0.2, fine_grained)
    assert [t.item() for t in got] == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("fine_grained", [False, True])
def test_gradcheck_alignment_loss(fine_grained):
    g = torch.Generator().manual_seed(1)
    feature = torch.randn(2, 4, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    fc_weight = torch.randn(3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    target = torch.tensor([2, 0])

    def losses(f, w):
        return reference.alignment_loss(f, w, target, fg_threshold=0.5, bg_threshold=0.3, fine_grained=fine_grained)

    assert torch.autograd.gradcheck(losses, (feature, fc_weight))


def test_gradient_reaches_min_and_max_positions():
    """L_norm's gradient flows through the per-image min and max of the norm map."""
    feature, fc_weight, target = tiny_case()
    feature.requires_grad_(True)
    _, loss_norm = reference.alignment_loss(feature, fc_weight, target, fg_threshold=0.6, bg_threshold=0.1, fine_grained=False)
    (grad,) = torch.autograd.grad(loss_norm, feature)
    # Only u0 (the max, F̂ = 1) and u2 (the min, F̂ = 0) are in a norm region; without the min/max
    # paths u2 would get no gradient since ∂F̂_u2/∂n_u2 = 0 when only the numerator is differentiated.
    assert grad[0, :, 0, 2].abs().sum() > 0 and grad[0, :, 0, 0].abs().sum() > 0


def test_repeated_classes_accumulate_weight_gradient():
    g = torch.Generator().manual_seed(3)
    feature = torch.randn(4, 6, 3, 3, generator=g, dtype=torch.float64)
    fc_weight = torch.randn(3, 6, generator=g, dtype=torch.float64, requires_grad=True)
    target = torch.tensor([1, 1, 0, 1])
    kwargs = dict(fg_threshold=0.6, bg_threshold=0.2, fine_grained=False)
    batch_sim, _ = reference.alignment_loss(feature, fc_weight, target, **kwargs)
    (batch_grad,) = torch.autograd.grad(batch_sim, fc_weight)
    per_image = [
        torch.autograd.grad(reference.alignment_loss(feature[b : b + 1], fc_weight, target[b : b + 1], **kwargs)[0], fc_weight)[0]
        for b in range(4)
    ]
    torch.testing.assert_close(batch_grad, sum(per_image) / 4)
    assert batch_grad[2].abs().sum() == 0  # class 2 is nobody's target


def test_empty_regions_give_zero_not_nan():
    feature, fc_weight, target = tiny_case()
    # τ_fg = 1 leaves fg_sim empty (F̂ ≤ 1); τ_bg = 0 leaves bg_sim empty (F̂ ≥ 0).
    loss_sim, _ = reference.alignment_loss(feature, fc_weight, target, fg_threshold=1.0, bg_threshold=0.0, fine_grained=False)
    assert loss_sim.item() == 0.0
    # all-positive features and weights: S > 0 everywhere, so bg_norm is empty.
    positive = feature.abs()
    _, loss_norm = reference.alignment_loss(positive, fc_weight.abs(), target, fg_threshold=0.6, bg_threshold=0.1, fine_grained=True)
    fhat = reference.minmax_normalize(reference.norm_map(positive))
    assert loss_norm.item() == pytest.approx(-fhat.mean().item(), abs=1e-12)


def test_constant_norm_map_and_zero_vectors_stay_finite():
    feature = torch.ones(1, 3, 2, 2, dtype=torch.float64, requires_grad=True)  # constant norm map
    fc_weight = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    losses = reference.alignment_loss(feature, fc_weight, torch.tensor([1]), fg_threshold=0.6, bg_threshold=0.1, fine_grained=True)
    assert reference.minmax_normalize(reference.norm_map(feature)).abs().sum() == 0  # 0 / (0 + eps)
    grads = torch.autograd.grad(sum(losses), (feature, fc_weight))
    assert all(torch.isfinite(t).all() for t in (*losses, *grads))

    zero_column = torch.randn(2, 3, 3, 3, dtype=torch.float64)
    zero_column[:, :, 1, 1] = 0  # an all-zero feature vector: its cosine is 0 (F.normalize clamp)
    zero_column.requires_grad_(True)
    sim = reference.target_similarity(zero_column, fc_weight, torch.tensor([0, 1]))
    assert (sim[:, 1, 1] == 0).all()
    losses = reference.alignment_loss(zero_column, fc_weight, torch.tensor([0, 1]), fg_threshold=0.6, bg_threshold=0.1, fine_grained=True)
    grads = torch.autograd.grad(sum(losses), (zero_column, fc_weight))
    assert all(torch.isfinite(t).all() for t in (*losses, *grads))


def test_attentive_dropout_hand_case():
    # channel means per position: [1, 2, 4, 3.2]; γ·max = .8·4 = 3.2 → candidates {u2} (u3 equals: strict, kept)
    x = torch.tensor([[1.0, 2.0, 4.0, 3.2], [1.0, 2.0, 4.0, 3.2]]).view(1, 2, 1, 4)
    uniform = torch.tensor([0.0, 0.0, 0.5, 0.0]).view(1, 1, 1, 4)  # r = p is applied (<=)
    out, keep = ops.attentive_dropout(x, 0.8, 0.5, uniform=uniform, backend="reference")
    assert keep.flatten().tolist() == [1, 1, 0, 1]
    assert torch.equal(out, x * keep)
    _, keep = ops.attentive_dropout(x, 0.8, 0.49, uniform=uniform, backend="reference")
    assert keep.flatten().tolist() == [1, 1, 1, 1]


def test_attentive_dropout_is_per_image_and_gradcheck():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 5, 4, 4, generator=g, dtype=torch.float64)
    x[1] *= 100  # another image's scale must not change this image's threshold
    uniform = torch.rand(3, 1, 4, 4, generator=g, dtype=torch.float64)
    _, keep = reference.attentive_dropout(x, 0.8, 0.5, uniform=uniform)
    for b in range(3):
        m = x[b].mean(0)
        expected = ~((m > 0.8 * m.max()) & (uniform[b, 0] <= 0.5))
        assert torch.equal(keep[b, 0].bool(), expected)
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: reference.attentive_dropout(t, 0.8, 0.5, uniform=uniform)[0], (x,))
    (grad,) = torch.autograd.grad(reference.attentive_dropout(x, 0.8, 0.5, uniform=uniform)[0].sum(), x)
    assert torch.equal(grad, keep.expand_as(x))  # dF' = dout · keep


def test_consistency_loss_value_and_gradient_to_both():
    a = torch.tensor([[1.0, -2.0], [3.0, 0.5]]).view(1, 2, 1, 2).requires_grad_(True)
    b = torch.tensor([[0.0, -2.0], [4.0, 0.0]]).view(1, 2, 1, 2).requires_grad_(True)
    loss = ops.consistency_loss(a, b, backend="reference")
    assert loss.item() == pytest.approx((1 + 0 + 1 + 0.5) / 4)
    ga, gb = torch.autograd.grad(loss, (a, b))
    assert ga.flatten().tolist() == [0.25, 0.0, -0.25, 0.25]  # sign(a − b)/N; 0 where equal
    assert torch.equal(gb, -ga)


def test_localization_maps():
    feature, fc_weight, target = tiny_case()
    maps = ops.localization_maps(feature, fc_weight, target)
    assert maps["cam"].flatten().tolist() == pytest.approx([1.5, 0.0, 0.5, 0.0])  # mean_d w_0,d F_d
    assert maps["norm"].flatten().tolist() == pytest.approx([1, 0.25, 0, 0.5])
    assert maps["sim"].flatten().tolist() == pytest.approx([0.6, 0, 1, 0])
    assert all(m.shape == (1, 1, 4) for m in maps.values())


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda f, w, t: ops.alignment_loss(f, w, t, fg_threshold=0.6, bg_threshold=0.1, fine_grained=True, backend="cuda-magic"), "backend"),
        (lambda f, w, t: ops.alignment_loss(f[0], w, t, fg_threshold=0.6, bg_threshold=0.1, fine_grained=True), "B×D×H×W"),
        (lambda f, w, t: ops.alignment_loss(f, w[:, :3], t, fg_threshold=0.6, bg_threshold=0.1, fine_grained=True), "fc_weight shape (5, 3)"),
        (lambda f, w, t: ops.alignment_loss(f, w.double(), t, fg_threshold=0.6, bg_threshold=0.1, fine_grained=True), "dtype"),
        (lambda f, w, t: ops.alignment_loss(f, w, t[:1], fg_threshold=0.6, bg_threshold=0.1, fine_grained=True), "target must have shape (B,) = (2,), got (1,)"),
        (lambda f, w, t: ops.alignment_loss(f, w, t.int(), fg_threshold=0.6, bg_threshold=0.1, fine_grained=True), "int64"),
        (lambda f, w, t: ops.alignment_loss(f, w, t + 5, fg_threshold=0.6, bg_threshold=0.1, fine_grained=True), "[0, 5)"),
        (lambda f, w, t: ops.alignment_loss(f, w.to("meta"), t, fg_threshold=0.6, bg_threshold=0.1, fine_grained=True), "devices"),
        (lambda f, w, t: ops.consistency_loss(f, f[:, :2]), "must match"),
        (lambda f, w, t: ops.attentive_dropout(f, 0.8, 1.5), "drop_prob"),
        (lambda f, w, t: ops.attentive_dropout(f, 0.8, 0.5, uniform=torch.rand(2, 4, 3, 3)), "uniform must have shape (2, 1, 3, 3)"),
    ],
)
def test_bad_arguments_name_the_argument(call, message):
    feature, fc_weight, target = torch.randn(2, 4, 3, 3), torch.randn(5, 4), torch.tensor([0, 4])
    with pytest.raises(ValueError) as info:
        call(feature, fc_weight, target)
    assert message in str(info.value)
