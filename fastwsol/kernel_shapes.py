"""The shapes the method's ops run at in the paper's configurations, and the memory traffic and
arithmetic of each op at a shape: one table for ``fastwsol check-gpu``, the GPU build
(``fastwsol.kernel_build``) and the benchmarks in ``bench/`` (the roofline).

A configuration names the feature map F (B×D×H×W, the input of the alignment and consistency
losses) and the attentive dropout's input (where the model applies it, docs/method.md §3).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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
    tensor_flops: int = 0  # on tensor cores (the class dot)


def _numel(shape) -> int:
    return math.prod(shape)


def alignment_traffic(shapes: OpShapes, element_size: int, direction: str, upcast: bool = False) -> Traffic:
    """Forward: F read once from HBM (a second class pass re-reads the program's F tile from L2),
    ŵ (fp32, C×D) re-read by every program from L2, the three maps written, the per-image kernel
    reading three maps and writing two. Backward: F read, dF written, four maps, the per-tile ∂ŵ partials.
    ``upcast``: a 16-bit F read as F.float() (the fp32 kernel's tf32x3 dot and blocking)."""
    # Imported here: Triton picks interpreter or compiler when the kernels are defined.
    from fastwsol.kernels import alignment_loss as alignment_kernel

    batch, channels, height, width = shapes.feature
    positions = batch * height * width
    feature = _numel(shapes.feature) * element_size
    tiles = batch * math.ceil(height * width / alignment_kernel.BLOCK_POSITIONS)
    if direction == "forward":
        passes = math.ceil(shapes.classes / alignment_kernel.MAX_BLOCK_CLASSES) if shapes.fine_grained else 1
        weight = shapes.classes * channels * 4 if shapes.fine_grained else 0
        precision = "tf32x3" if element_size == 4 or upcast else "tf32"
        block = alignment_kernel.forward_launch(shapes.fine_grained, precision, batch, height * width)["BLOCK_P"]
        programs = batch * math.ceil(height * width / block)
        # the stats kernel writes 3 maps; the image kernel reads 3, writes 2
        maps = 3 * positions * MAP_BYTES + (3 + 2) * positions * MAP_BYTES
        hbm = feature + weight + batch * channels * 4 + maps
        l2 = passes * feature + programs * (weight + channels * 4) + maps  # every program reads all of ŵ
        class_dot = 2 * positions * shapes.classes * channels if shapes.fine_grained else 0
        # fp32 F (or upcast): the class dot runs as 3 TF32 products (tf32x3)
        tensor_flops = class_dot * (3 if precision == "tf32x3" else 1)
        return Traffic(hbm, l2, 4 * positions * channels, feature + 2 * batch * 4, tensor_flops)
    partials = tiles * channels * 4
    hbm = 2 * feature + 4 * positions * MAP_BYTES + batch * channels * 4 + partials
    return Traffic(hbm, hbm + tiles * channels * 4, 6 * positions * channels, 2 * feature)


def dropout_traffic(shapes: OpShapes, element_size: int, direction: str) -> Traffic:
    """Forward: the channel mean reads x, the mask reads the means twice and writes keep, the
    apply reads x again and writes out (the minimum reads x once: an image's x does not fit on chip).
    Backward: read dout and keep, write dx."""
    batch, channels, height, width = shapes.dropout_input
    x = _numel(shapes.dropout_input) * element_size
    keep = batch * height * width * element_size
    means = batch * height * width * 4
    if direction == "forward":
        hbm = x + means + 2 * means + keep + x + keep + x
        return Traffic(hbm, hbm, 2 * _numel(shapes.dropout_input), 2 * x + keep)
    hbm = 2 * x + keep
    return Traffic(hbm, hbm, _numel(shapes.dropout_input), 2 * x + keep)


def consistency_traffic(shapes: OpShapes, element_size: int, direction: str) -> Traffic:
    """Forward: read F and F_drop, one fp32 partial per tile. Backward: read both, write both gradients."""
    feature = _numel(shapes.feature) * element_size
    if direction == "forward":
        return Traffic(2 * feature, 2 * feature, 3 * _numel(shapes.feature), 2 * feature)
    return Traffic(4 * feature, 4 * feature, 3 * _numel(shapes.feature), 4 * feature)


TRAFFIC = {
    "alignment_loss": alignment_traffic,
    "attentive_dropout": dropout_traffic,
    "consistency_loss": consistency_traffic,
}


def objective_feature_traffic(shapes: OpShapes, path: str) -> dict[str, int]:
    """HBM bytes per training step that the losses' handling of a bf16 F and F_drop adds to the
    kernels' own reads and writes at 16 bits, by ``path``:

    - ``"float"``: the objective's ``.float()`` copies: F and F_drop cast to fp32 (read 2, write 4
      bytes an element each), the kernels then read 4-byte elements and write 4-byte gradients, autograd
      adds the two fp32 dF (read 8, write 4) and casts dF and dF_drop back (read 4, write 2 each);
    - ``"upcast"``: the kernels read the bf16 tensors and write bf16 gradients; autograd adds the two
      bf16 dF (read 4, write 2 bytes an element);
    - ``"fused"``: one backward writing dF once (L_drop's and the alignment's gradient added in
      fp32; it would also read F once for both): nothing added, and one F read fewer.

    Returns {"copies", "kernel_excess", "gradient_sum", "total"}: bytes of the casts, the kernels'
    traffic beyond their bf16 form, and the autograd add of the two dF (the fused path's saved F
    read counts negative in kernel_excess)."""
    n = _numel(shapes.feature)
    if path == "float":
        copies = 2 * n * (2 + 4) + 2 * n * (4 + 2)  # forward casts of F, F_drop; backward casts of dF, dF_drop
        # extra 2 bytes an element: alignment fwd reads F, bwd reads F and writes dF; L_drop fwd reads
        # F, F_drop, bwd reads both and writes both
        kernel_excess = 2 * n * (3 + 2 + 4)
        gradient_sum = n * (8 + 4)
    elif path == "upcast":
        copies, kernel_excess, gradient_sum = 0, 0, n * (2 + 2 + 2)
    elif path == "fused":
        copies, kernel_excess, gradient_sum = 0, -(n * 2 + n * 2), 0  # one F read and one dF write fewer
    else:
        raise ValueError(f"path must be 'float', 'upcast' or 'fused', got {path!r}")
    return {"copies": copies, "kernel_excess": kernel_excess, "gradient_sum": gradient_sum,
            "total": copies + kernel_excess + gradient_sum}
