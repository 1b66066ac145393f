"""Model registry: ``create_model(name, num_classes, ...)``, and ``model_from_config``, the one
mapping of an experiment config to its model.

Names: ``vgg16``, ``resnet50`` (the paper's backbones), ``vgg_small`` (a narrow VGG of the same
shape, with BatchNorm, for tests and CPU runs from scratch; ``vgg_small_nobn`` without).
``with_dropped_path=False`` builds the network without the dropped path (vanilla CAM, or an
ablation row without L_drop: see ``fastwsol.objective``).
"""

from __future__ import annotations

from functools import partial

from fastwsol.models.base import TwoPathWSOLNet
from fastwsol.models.pretrained import load_backbone_from_run
from fastwsol.models.resnet import build_resnet50
from fastwsol.models.vgg import VGG_SMALL_BLOCKS, build_vgg

_BUILDERS = {
    "vgg16": partial(build_vgg, large_feature_map=False),
    "resnet50": partial(build_resnet50, large_feature_map=True),
    # BatchNorm: a VGG this size does not start learning from scratch without it (CE stays at
    # ln C for epochs on the synthetic set), and no pretrained weights exist for it.
    "vgg_small": partial(
        build_vgg, blocks=VGG_SMALL_BLOCKS, conv6_channels=256, large_feature_map=False, batch_norm=True
    ),
    # The same without BatchNorm (VGG16-GAP's layer types): nothing depends on the batch, so a
    # DDP run equals the single-process run exactly (the DDP test uses it).
    "vgg_small_nobn": partial(build_vgg, blocks=VGG_SMALL_BLOCKS, conv6_channels=256, large_feature_map=False),
}
MODEL_NAMES = tuple(sorted(_BUILDERS))


def create_model(
    name: str,
    num_classes: int,
    *,
    pretrained=None,
    init_from=None,
    large_feature_map: bool | None = None,
    drop_threshold: float = 0.8,
    drop_prob: float = 0.5,
    with_dropped_path: bool = True,
    freeze_backbone_bn: bool = False,
    keep_pretrained_classifier: bool = False,
) -> TwoPathWSOLNet:
    """Build a WSOL network. ``pretrained``: None, ``"imagenet"`` (torchvision's weights) or a
    path to a torchvision-format state dict. ``init_from``: a fastwsol checkpoint of the same
    architecture whose backbone is copied (new layers stay fresh). ``large_feature_map=None``
    keeps the backbone's default (VGG16 14×14, ResNet50 28×28). ``keep_pretrained_classifier``
    (resnet50 with ``pretrained`` only): fc starts as the pretrained 1000-class classifier, so
    ``num_classes`` must be 1000."""
    if name not in _BUILDERS:
        raise ValueError(f"model name {name!r} is unknown; choose one of {MODEL_NAMES}")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    if pretrained is not None and init_from is not None:
        raise ValueError("give either pretrained or init_from, not both")
    kwargs = {} if large_feature_map is None else {"large_feature_map": large_feature_map}
    if keep_pretrained_classifier:
        if name != "resnet50" or pretrained is None:
            raise ValueError(
                f"model.keep_pretrained_classifier needs resnet50 with pretrained weights, not {name} "
                f"with pretrained={pretrained!r}"
            )
        kwargs["keep_pretrained_classifier"] = True
    model = _BUILDERS[name](
        num_classes,
        pretrained=pretrained,
        with_dropped_path=with_dropped_path,
        drop_threshold=drop_threshold,
        drop_prob=drop_prob,
        **kwargs,
    )
    if init_from is not None:
        load_backbone_from_run(model, init_from)
    model.freeze_backbone_bn = freeze_backbone_bn
    return model


def model_from_config(config, num_classes: int, *, load_weights: bool = True) -> TwoPathWSOLNet:
    """The model an ``ExperimentConfig`` trains: ``model.*`` and, from the objective, whether the
    dropped path exists. ``load_weights=False`` skips ``model.pretrained``/``model.init_from``
    (a checkpoint's weights replace them)."""
    from fastwsol.objective import Objective

    m = config.model
    return create_model(
        m.name,
        num_classes,
        pretrained=m.pretrained if load_weights else None,
        init_from=m.init_from if load_weights else None,
        large_feature_map=m.large_feature_map,
        drop_threshold=m.drop_threshold,
        drop_prob=m.drop_prob,
        freeze_backbone_bn=m.freeze_backbone_bn,
        keep_pretrained_classifier=m.keep_pretrained_classifier and load_weights,
        with_dropped_path=Objective.from_config(config).with_dropped_path,
    )


__all__ = ["MODEL_NAMES", "TwoPathWSOLNet", "create_model", "model_from_config"]
