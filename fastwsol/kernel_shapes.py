"""The shapes the method's ops run at in the paper's configurations, and the memory traffic and
arithmetic of each op at a shape: one table for ``fastwsol check-gpu``, the GPU build
(``fastwsol.kernel_build``) and the benchmarks in ``bench/`` (the roofline).

A configuration names the feature map F (B×D×H×W, the input of the alignment and consistency
losses) and the attentive dropout's input (where the model applies it, docs/method.md §3).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

MAP_BYTES = 4  # the B×HW per-position maps of the alignment kernels are fp32


@dataclass(frozen=True)
class OpShapes:
    model: str
    batch: int
    channels: int  # D of F
    size: int  # H = W of F
    classes: int
    fine_grained: bool
    dropout_channels: int
    dropout_size: int

    @property
    def feature(self) -> tuple[int, int, int, int]:
        return (self.batch, self.channels, self.size, self.size)

    @property
    def dropout_input(self) -> tuple[int, int, int, int]:
        return (self.batch, self.dropout_channels, self.dropout_size, self.dropout_size)


REAL_SHAPES = {
    # VGG16: F = conv6 (1024 channels, 14² at 224²); the dropout follows conv4_3 + ReLU (512, 28²).
    "vgg16-cub": OpShapes("vgg16", 32, 1024, 14, 200, True, 512, 28),
    # ResNet50 (layer4 at stride 1): F = layer4 (2048, 28²); the dropout follows layer4.0.
    "resnet50-cub": OpShapes("resnet50", 32, 2048, 28, 200, True, 2048, 28),
    "vgg16-imagenet": OpShapes("vgg16", 256, 1024, 14, 1000, False, 512, 28),
}

# Tiny stand-ins of the same structure (fine-grained with two class tiles, target-only, odd
# sizes), for ``fastwsol check-gpu --dry-run`` on the CPU through Triton's interpreter.
DRY_RUN_SHAPES = {
    "tiny-fine": OpShapes("vgg_small", 2, 8, 5, 130, True, 6, 7),
    "tiny-target": OpShapes("vgg_small", 3, 12, 4, 7, False, 5, 6),
}


@dataclass(frozen=True)
class Traffic:
    """One op, one direction, all launches: bytes from/to HBM (each byte once), bytes served by
    L2 (re-reads of data another program or pass already brought in, plus the HBM bytes), the
    arithmetic, and the least HBM traffic any implementation needs (read inputs, write outputs once)."""

    hbm_bytes: int
    l2_bytes: int
    flops: int  # on CUDA cores
    minimum_bytes: int
    tensor_flops: int = 0  # on tensor cores in TF32 (the class max's recheck: tf32x3, 3 products each)
    bf16_tensor_flops: int = 0  # on tensor cores in bf16 (the one-pass class dot)


# The share of positions whose S* sign the one-pass class dot leaves open (|max| within its error
# bound, ≈ 2.5e-3·‖F_u‖ at bf16): assumed, not measured; it sets the recheck's work.
RECHECK_SHARE = 0.01


def _numel(shape) -> int:
    return math.prod(shape)


def alignment_traffic(shapes: OpShapes, element_size: int, direction: str, upcast: bool = False) -> Traffic:
    """Forward: the stats kernel reads F once from HBM (a second class pass, C > 256, re-reads the
    program's F tile from L2), bf16(ŵ) (C×D) and ŵ_y by every program from L2, and writes three
    maps; fine-grained, it lists ``RECHECK_SHARE`` of the positions, and the recheck (a grid for
    every position, each program reading the list's length) reads their F from HBM and fp32 ŵ per
    block of listed positions; the per-image kernel reads three maps and writes two. Arithmetic as
    executed: the class dot over the padded class and position tiles. Backward:
    ``feature_grad_traffic``. ``upcast`` changes nothing here (a 16-bit F is read as it is)."""
    # Imported here: Triton picks interpreter or compiler when the kernels are defined.
    from fastwsol.kernels import alignment_loss as kernel

    batch, channels, height, width = shapes.feature
    positions = batch * height * width
    feature = _numel(shapes.feature) * element_size
    if direction != "forward":
        return feature_grad_traffic(shapes, element_size, with_dropped=False)
    launch = kernel.forward_launch(shapes.fine_grained, batch, height * width)
    programs = batch * math.ceil(height * width / launch["BLOCK_P"])
    w_target = batch * channels * 4
    # stats: n, S (and S*) written; image: those read, ∂L/∂n and ∂L/∂S written
    written = 3 if shapes.fine_grained else 2
    maps = (written + written + 2) * positions * MAP_BYTES
    hbm, l2 = feature + w_target + maps, feature + programs * channels * 4 + maps
    flops = 4 * positions * channels  # ‖F_u‖² and ⟨ŵ_y, F_u⟩
    if not shapes.fine_grained:
        return Traffic(hbm, l2, flops, feature + 2 * batch * 4)
    block_c = kernel.block_classes(shapes.classes)
    passes = math.ceil(shapes.classes / block_c)
    padded_channels = math.ceil(channels / launch["BLOCK_D"]) * launch["BLOCK_D"]
    w_dot = shapes.classes * channels * 2
    bf16_tensor_flops = 2 * programs * launch["BLOCK_P"] * passes * block_c * padded_channels
    if element_size != 2:  # bf16(F), rounded on the bits: 4 more per element
        flops += 4 * positions * channels
    listed = math.ceil(RECHECK_SHARE * positions)
    blocks = math.ceil(listed / kernel.RECHECK_POSITIONS)
    recheck_programs = math.ceil(positions / kernel.RECHECK_POSITIONS)
    recheck_hbm = listed * (channels * element_size + 2 * 4 + 4) + 4  # F, norm, S*, the list; the count
    recheck_l2 = recheck_hbm + blocks * passes * shapes.classes * channels * 4 + recheck_programs * 4
    tensor_flops = 3 * 2 * blocks * kernel.RECHECK_POSITIONS * passes * block_c * channels
    return Traffic(hbm + w_dot + listed * 4 + recheck_hbm,
                   l2 + passes * feature - feature + programs * w_dot + listed * 4 + recheck_l2,
                   flops, feature + 2 * batch * 4, tensor_flops, bf16_tensor_flops)


def feature_grad_traffic(shapes: OpShapes, element_size: int, with_dropped: bool) -> Traffic:
    """The alignment backward (``_feature_grad_kernel``; ``with_dropped``: the fused backward of
    the three losses on F, with F_drop read and ∂L/∂F_drop written by the same pass). One
    [channels × positions] tile per program: F (and F_drop) read once, ∂L/∂F (and ∂L/∂F_drop)
    written once; the four maps (fp32) read once from HBM, then again from L2 by every channel
    tile; ŵ_y (fp32) read per image, then from L2 by every position tile; the per-tile ∂ŵ partials
    written, and read back by their sum over tiles."""
    from fastwsol.kernels import alignment_loss as alignment_kernel

    batch, channels, height, width = shapes.feature
    positions = batch * height * width
    feature = _numel(shapes.feature) * element_size
    position_tiles = math.ceil(height * width / alignment_kernel.GRAD_BLOCK_POSITIONS)
    channel_tiles = math.ceil(channels / alignment_kernel.GRAD_BLOCK_CHANNELS)
    tensors = 4 if with_dropped else 2  # F, ∂L/∂F (and F_drop, ∂L/∂F_drop)
    maps = 4 * positions * MAP_BYTES
    w_target = batch * channels * 4
    partials = batch * position_tiles * channels * 4
    hbm = tensors * feature + maps + w_target + 2 * partials
    l2 = hbm + (channel_tiles - 1) * maps + (position_tiles - 1) * w_target
    flops = (6 + (4 if with_dropped else 0)) * positions * channels
    return Traffic(hbm, l2, flops, tensors * feature)


def feature_losses_traffic(shapes: OpShapes, element_size: int, direction: str, upcast: bool = True) -> Traffic:
    """The three losses on F as one op (``fastwsol.kernels.feature_losses``; it always computes on
    F.float(), whatever ``upcast`` says). Its backward is one pass: least traffic F and F_drop read
    once, both gradients written once. Its forward is the consistency and alignment forwards, one
    after the other (their own rows: two launches' times add, their traffic does not overlap)."""
    if direction != "backward":
        raise ValueError("the forward of feature_losses is consistency_loss's and alignment_loss's (upcast)")
    return feature_grad_traffic(shapes, element_size, with_dropped=True)


def dropout_traffic(shapes: OpShapes, element_size: int, direction: str, upcast: bool = False) -> Traffic:
    """Forward (kernels/attentive_dropout.py): x read once from HBM — the launch that applies the
    mask to a group of images re-reads their x from L2, the previous launch having read it for the
    means (``GROUP_BYTES`` a group: three groups in flight fit in L2) — out and keep written once;
    the means (fp32) written, then read from L2 by every channel tile of the mask, the tiles' maxima
    by every program. Backward: read dout and keep, write dx."""
    from fastwsol.kernels import attentive_dropout as kernel

    batch, channels, height, width = shapes.dropout_input
    positions = height * width
    x = _numel(shapes.dropout_input) * element_size
    keep = batch * positions * element_size
    if direction != "forward":
        hbm = 2 * x + keep
        return Traffic(hbm, hbm, _numel(shapes.dropout_input), 2 * x + keep)
    means = batch * positions * 4
    mean_tiles = math.ceil(positions / kernel.MEAN_BLOCK_POSITIONS)
    channel_tiles = math.ceil(channels / kernel.apply_block_channels(element_size))
    apply_programs = batch * math.ceil(positions / kernel.BLOCK_POSITIONS) * channel_tiles
    tile_maxima = batch * mean_tiles * 4
    hbm = 2 * x + keep + means + tile_maxima
    l2 = 3 * x + keep + means * (1 + channel_tiles) + apply_programs * mean_tiles * 4
    return Traffic(hbm, l2, 2 * _numel(shapes.dropout_input), 2 * x + keep)


def consistency_traffic(shapes: OpShapes, element_size: int, direction: str, upcast: bool = False) -> Traffic:
    """Forward: read F and F_drop, one fp32 partial per tile. Backward: read both, write both
    gradients (the same with ``upcast``)."""
    feature = _numel(shapes.feature) * element_size
    if direction == "forward":
        return Traffic(2 * feature, 2 * feature, 3 * _numel(shapes.feature), 2 * feature)
    return Traffic(4 * feature, 4 * feature, 3 * _numel(shapes.feature), 4 * feature)


TRAFFIC = {
    "alignment_loss": alignment_traffic,
    "attentive_dropout": dropout_traffic,
    "consistency_loss": consistency_traffic,
}
# The training objective's one op for the three losses on F (``fastwsol.ops.feature_losses``).
FUSED_TRAFFIC = {"feature_losses": feature_losses_traffic}

# Element sizes of the dtypes the kernels run in; "bf16-upcast": a bf16 tensor read as its fp32
# upcast (the losses on F in the training objective: fp32 arithmetic and results).
UPCAST_DTYPE = "bf16-upcast"
DTYPE_BYTES = {"fp32": 4, "bf16": 2, UPCAST_DTYPE: 2}


def op_traffic(op: str, shapes: OpShapes, dtype: str, direction: str) -> Traffic:
    """``TRAFFIC`` or ``FUSED_TRAFFIC`` of ``op`` at a dtype name of ``DTYPE_BYTES``."""
    return {**TRAFFIC, **FUSED_TRAFFIC}[op](shapes, DTYPE_BYTES[dtype], direction, upcast=dtype == UPCAST_DTYPE)


# One training step at the full objective under bf16 autocast with the Triton kernels: the
# attentive dropout on its bf16 input; the losses on F as one op on the bf16 F read as fp32, whose
# forward runs the consistency and the alignment forwards.
TRAINING_STEP = (
    ("attentive_dropout", "forward", "bf16"),
    ("consistency_loss", "forward", UPCAST_DTYPE),
    ("alignment_loss", "forward", UPCAST_DTYPE),
    ("feature_losses", "backward", UPCAST_DTYPE),
    ("attentive_dropout", "backward", "bf16"),
)


def training_step_traffic(shapes: OpShapes) -> list[tuple[tuple[str, str, str], Traffic]]:
    """(``TRAINING_STEP`` entry, its traffic) for each entry. The sum of their ``minimum_bytes`` is
    the step's least traffic, except that the losses' forward needs F read once, not by each of
    its two ops: the alignment forward's F read is taken out of its minimum here."""
    entries = [(entry, op_traffic(entry[0], shapes, entry[2], entry[1])) for entry in TRAINING_STEP]
    feature = _numel(shapes.feature) * DTYPE_BYTES[UPCAST_DTYPE]
    return [(entry, replace(t, minimum_bytes=t.minimum_bytes - feature) if entry[:2] == ("alignment_loss", "forward")
             else t) for entry, t in entries]
