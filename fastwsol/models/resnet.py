"""ResNet50 (docs/method.md §1): layer3 stride 1 with the large feature map (224² → 28×28, layer4
stride 1 as in wsolevaluation), F = output of layer4, attentive dropout after layer4.0; the
remaining layer4 blocks run on both paths (each path its own BatchNorm batch, impl)."""

from __future__ import annotations

import torch.nn as nn
from torchvision.models import resnet50

from fastwsol.models.base import TwoPathWSOLNet, initialize_weights
from fastwsol.models.pretrained import load_remapped, read_state_dict

# torchvision key prefix → ours; layer4 is split at the dropout point (after its first block).
_TORCHVISION_RESNET50_PREFIXES = {
    "conv1.": "head.0.",
    "bn1.": "head.1.",
    "layer1.": "head.4.",
    "layer2.": "head.5.",
    "layer3.": "head.6.",
    "layer4.0.": "head.7.",
    "layer4.1.": "tail.0.",
    "layer4.2.": "tail.1.",
}


def _remap_torchvision_resnet50(key: str) -> str | None:
    for old, new in _TORCHVISION_RESNET50_PREFIXES.items():
        if key.startswith(old):
            return new + key[len(old):]
    return None  # fc: replaced


def _remap_keeping_classifier(key: str) -> str | None:
    return key if key in ("fc.weight", "fc.bias") else _remap_torchvision_resnet50(key)


def _check_pretrained_classifier(state: dict, model: TwoPathWSOLNet, origin: str) -> None:
    """The kept classifier loads strictly: both tensors present, of this run's shape."""
    missing = [key for key in ("fc.weight", "fc.bias") if key not in state]
    if missing:
        raise ValueError(
            f"{origin}: model.keep_pretrained_classifier needs the pretrained classifier, but the file has "
            f"no {' or '.join(missing)}"
        )
    theirs, ours = tuple(state["fc.weight"].shape), tuple(model.fc.weight.shape)
    if theirs != ours:
        raise ValueError(
            f"model.keep_pretrained_classifier: the classifier of {origin} has shape {theirs} ({theirs[0]} classes) "
            f"but this run's fc has shape {ours} ({ours[0]} classes): keep it only on a dataset of the "
            f"pretraining's classes (ILSVRC), or set model.keep_pretrained_classifier=false"
        )


def _set_stride(layer: nn.Sequential, stride: int) -> None:
    """Stride of a stage's first bottleneck (torchvision puts it on conv2 and the downsample)."""
    first = layer[0]
    first.conv2.stride = (stride, stride)
    first.downsample[0].stride = (stride, stride)


def build_resnet50(
    num_classes: int,
    *,
    pretrained=None,
    large_feature_map: bool = True,
    with_dropped_path: bool = True,
    drop_threshold: float = 0.8,
    drop_prob: float = 0.25,
    keep_pretrained_classifier: bool = False,
) -> TwoPathWSOLNet:
    """``keep_pretrained_classifier``: fc starts as the pretrained weights' classifier instead of
    N(0, 0.01); it still counts as a new layer, trained at the new layers' learning rate (the
    authors' classifier group holds fc whether or not it is pretrained)."""
    net = resnet50(weights=None)
    _set_stride(net.layer3, 1 if large_feature_map else 2)
    _set_stride(net.layer4, 1)
    head = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3, net.layer4[0])
    tail = nn.Sequential(*net.layer4[1:])
    model = TwoPathWSOLNet(
        head,
        tail,
        2048,
        num_classes,
        with_dropped_path=with_dropped_path,
        drop_threshold=drop_threshold,
        drop_prob=drop_prob,
        batch_tail_paths=False,  # BatchNorm must see each path's batch on its own
        new_layers=("fc",),
    )
    initialize_weights(model.modules(), "xavier")
    if pretrained is not None:
        state = read_state_dict(pretrained, "ResNet50_Weights.IMAGENET1K_V1")
        origin = f"ResNet50 weights {pretrained}"
        remap = _remap_torchvision_resnet50
        if keep_pretrained_classifier:
            _check_pretrained_classifier(state, model, origin)
            remap = _remap_keeping_classifier
        load_remapped(model, state, remap, origin=origin)
    return model
