"""VGG16-GAP (docs/method.md §1): pool5 removed, conv6 (3×3, 512→1024) + ReLU added, attentive
dropout after conv4_3+ReLU. ``large_feature_map`` also removes pool4 (28×28 instead of 14×14)."""

from __future__ import annotations

from collections import OrderedDict

import torch.nn as nn

from fastwsol.models.base import TwoPathWSOLNet, initialize_weights
from fastwsol.models.pretrained import load_remapped, read_state_dict

VGG16_BLOCKS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
# A narrow VGG of the same shape, for tests and CPU runs from scratch.
VGG_SMALL_BLOCKS = ((16, 16), (32, 32), (64, 64), (128, 128), (128, 128))


def _conv_relu(layers: OrderedDict, name: str, c_in: int, c_out: int, batch_norm: bool) -> None:
    layers[f"conv{name}"] = nn.Conv2d(c_in, c_out, kernel_size=3, padding=1)
    if batch_norm:
        layers[f"bn{name}"] = nn.BatchNorm2d(c_out)
    layers[f"relu{name}"] = nn.ReLU(inplace=True)


def _vgg_layers(
    blocks, conv6_channels: int, large_feature_map: bool, batch_norm: bool
) -> tuple[OrderedDict, OrderedDict]:
    head, tail = OrderedDict(), OrderedDict()
    c_in = 3
    for b, widths in enumerate(blocks, start=1):
        layers = head if b <= 4 else tail
        for i, width in enumerate(widths, start=1):
            _conv_relu(layers, f"{b}_{i}", c_in, width, batch_norm)
            c_in = width
        if b <= 3:
            head[f"pool{b}"] = nn.MaxPool2d(kernel_size=2, stride=2)
        elif b == 4 and not large_feature_map:
            tail["pool4"] = nn.MaxPool2d(kernel_size=2, stride=2)  # after the dropout point
    _conv_relu(tail, "6", c_in, conv6_channels, batch_norm)
    return head, tail


def torchvision_vgg16_key_map() -> dict[str, str]:
    """torchvision ``features.{i}`` conv index → our layer name (indices shift at the split)."""
    mapping, index = {}, 0
    for b, widths in enumerate(VGG16_BLOCKS, start=1):
        for i in range(1, len(widths) + 1):
            part = "head" if b <= 4 else "tail"
            mapping[f"features.{index}."] = f"{part}.conv{b}_{i}."
            index += 2  # conv, relu
        index += 1  # pool
    return mapping


def _remap_torchvision_vgg16(key: str) -> str | None:
    for old, new in torchvision_vgg16_key_map().items():
        if key.startswith(old):
            return new + key[len(old) :]
    return None  # the classifier: replaced by conv6 + GAP + fc


def build_vgg(
    num_classes: int,
    *,
    blocks=VGG16_BLOCKS,
    conv6_channels: int = 1024,
    pretrained=None,
    large_feature_map: bool = False,
    batch_norm: bool = False,
    with_dropped_path: bool = True,
    drop_threshold: float = 0.8,
    drop_prob: float = 0.5,
) -> TwoPathWSOLNet:
    head, tail = _vgg_layers(blocks, conv6_channels, large_feature_map, batch_norm)
    model = TwoPathWSOLNet(
        nn.Sequential(head),
        nn.Sequential(tail),
        conv6_channels,
        num_classes,
        with_dropped_path=with_dropped_path,
        drop_threshold=drop_threshold,
        drop_prob=drop_prob,
        batch_tail_paths=not batch_norm,  # without BatchNorm one batched tail pass is exact
        new_layers=("tail.conv6", "tail.bn6", "fc") if batch_norm else ("tail.conv6", "fc"),
    )
    initialize_weights(model.modules(), "he")
    if pretrained is not None:
        if blocks != VGG16_BLOCKS or batch_norm:
            raise ValueError("pretrained weights exist only for the full VGG16 without BatchNorm")
        state = read_state_dict(pretrained, "VGG16_Weights.IMAGENET1K_V1")
        load_remapped(model, state, _remap_torchvision_vgg16, origin=f"VGG16 weights {pretrained}")
    return model
