"""Backbones: shapes at 224², pretrained remapping from torchvision-format files, the dropout point."""

import pytest
import torch
import torch.nn as nn
from torchvision.models import resnet50, vgg16

from fastwsol import ops
from fastwsol.models import MODEL_NAMES, create_model

# (name, large_feature_map, expected D, expected H=W at 224²)
SHAPES = [
    ("vgg16", None, 1024, 14),
    ("vgg16", True, 1024, 28),
    ("resnet50", None, 2048, 28),
    ("resnet50", False, 2048, 14),
    ("vgg_small", None, 256, 14),
]


@pytest.mark.parametrize("name, large, dim, size", SHAPES)
def test_output_shapes_at_224(name, large, dim, size):
    torch.manual_seed(0)
    x = torch.randn(1, 3, 224, 224)
    model = create_model(name, num_classes=7, large_feature_map=large)
    with torch.no_grad():
        train_out = model.train()(x)
        eval_out = model.eval()(x)
    assert train_out["logits"].shape == (1, 7)
    assert train_out["feature"].shape == train_out["feature_dropped"].shape == (1, dim, size, size)
    assert set(eval_out) == {"logits", "feature"}  # the dropped path is not computed at eval
    assert eval_out["feature"].shape == (1, dim, size, size)


@pytest.mark.parametrize("name, dim, size", [("vgg_small", 256, 14), ("resnet50", 2048, 28)])
def test_without_dropped_path_only_one_path_runs(name, dim, size):
    model = create_model(name, num_classes=3, with_dropped_path=False).train()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 224, 224))
    assert set(out) == {"logits", "feature"} and out["feature"].shape == (1, dim, size, size)


def test_model_names_and_bad_arguments():
    assert {"vgg16", "resnet50", "vgg_small", "vgg_small_nobn"} == set(MODEL_NAMES)
    with pytest.raises(ValueError, match="'alexnet' is unknown"):
        create_model("alexnet", 10)
    with pytest.raises(ValueError, match="num_classes"):
        create_model("vgg_small", 0)
    with pytest.raises(ValueError, match="drop_prob"):
        create_model("vgg_small", 3, drop_prob=2.0)


def _convs(module: nn.Module) -> list[nn.Conv2d]:
    return [m for m in module.modules() if isinstance(m, nn.Conv2d)]


@pytest.mark.parametrize("large", [False, True])
def test_vgg16_pretrained_remap(tmp_path, large):
    torch.manual_seed(1)
    source = vgg16(weights=None)
    path = tmp_path / "vgg16.pth"
    torch.save(source.state_dict(), path)
    model = create_model("vgg16", num_classes=5, pretrained=str(path), large_feature_map=large)
    source_convs, our_convs = _convs(source.features), _convs(model)
    assert len(source_convs) == 13 and len(our_convs) == 14  # + conv6
    for src, ours in zip(source_convs, our_convs[:13]):
        assert torch.equal(src.weight, ours.weight) and torch.equal(src.bias, ours.bias)
    assert our_convs[13] is model.tail.conv6 and model.tail.conv6.weight.shape == (1024, 512, 3, 3)
    # conv4_3+ReLU ends the head; conv5_1 (after pool4 unless large) starts the tail: the split point.
    assert list(model.head.named_children())[-1][0] == "relu4_3"
    assert list(model.tail.named_children())[0][0] == ("conv5_1" if large else "pool4")
    assert torch.equal(model.head.conv4_3.weight, source.features[21].weight)
    assert torch.equal(model.tail.conv5_1.weight, source.features[24].weight)


def test_resnet50_pretrained_remap(tmp_path):
    torch.manual_seed(2)
    source = resnet50(weights=None)
    for m in source.modules():  # non-trivial BN statistics, so buffers are checked too
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    path = tmp_path / "resnet50.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, path)
    model = create_model("resnet50", num_classes=5, pretrained=path)
    pairs = [
        (source.conv1, model.head[0]),
        (source.bn1, model.head[1]),
        (source.layer1, model.head[4]),
        (source.layer2, model.head[5]),
        (source.layer3, model.head[6]),
        (source.layer4[0], model.head[7]),
        (source.layer4[1], model.tail[0]),
        (source.layer4[2], model.tail[1]),
    ]
    for src, ours in pairs:
        src_state, our_state = src.state_dict(), ours.state_dict()
        assert src_state.keys() == our_state.keys()
        for key in src_state:
            assert torch.equal(src_state[key], our_state[key]), key
    assert model.head[6][0].conv2.stride == (1, 1) and model.head[7].conv2.stride == (1, 1)


def test_pretrained_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        create_model("vgg16", 3, pretrained=tmp_path / "missing.pth")
    garbled = tmp_path / "garbled.pth"
    garbled.write_bytes(b"\x80\x04 this is not a checkpoint")
    with pytest.raises(ValueError, match="garbled.pth"):
        create_model("vgg16", 3, pretrained=garbled)
    wrong = tmp_path / "resnet_as_vgg.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, wrong)
    with pytest.raises(ValueError, match="backbone weights are missing"):
        create_model("vgg16", 3, pretrained=wrong)
    bad_shape = tmp_path / "bad_shape.pth"
    torch.save({"features.0.weight": torch.zeros(8, 3, 3, 3)}, bad_shape)
    with pytest.raises(ValueError, match="features.0.weight"):
        create_model("vgg16", 3, pretrained=bad_shape)


def test_init_from_a_run_copies_the_backbone_and_keeps_new_layers_fresh(tmp_path):
    """``init_from``: the synthetic pretraining run's backbone starts the WSOL runs (the paper's
    ImageNet initialisation); conv6/bn6/fc are new layers, and the class count may differ."""
    from fastwsol.io import save_atomic

    torch.manual_seed(0)
    source = create_model("vgg_small", 21, with_dropped_path=False)
    with torch.no_grad():
        for tensor in source.state_dict().values():  # parameters and BatchNorm statistics
            tensor.add_(1)  # nothing a fresh initialisation could produce
    path = tmp_path / "pretrain.pt"
    save_atomic({"model": source.state_dict(), "config": {}, "epoch": 8}, path)
    model = create_model("vgg_small", 10, init_from=path)
    src, ours = source.state_dict(), model.state_dict()
    new = [k for k in ours if model.is_new_parameter(k)]
    assert any(k.startswith("tail.conv6") for k in new) and any(k.startswith("fc") for k in new)
    for key in ours:
        if key in new:
            assert ours[key].shape != src[key].shape or not torch.equal(ours[key], src[key]), key
        else:
            assert torch.equal(ours[key], src[key]), key
    with pytest.raises(ValueError, match="pretrain.pt"):
        create_model("vgg_small_nobn", 10, init_from=path)  # another architecture: no BatchNorm keys
    with pytest.raises(ValueError, match="not both"):
        create_model("vgg_small", 10, init_from=path, pretrained="imagenet")
    with pytest.raises(FileNotFoundError, match=r"model.init_from: .*absent.pt.* does not exist"):
        create_model("vgg_small", 10, init_from=tmp_path / "absent.pt")


@pytest.mark.parametrize("name, last_head_layer", [("vgg_small", "relu4_2"), ("resnet50", "7")])
def test_dropout_sits_between_head_and_tail(monkeypatch, name, last_head_layer):
    """The dropout sees the head's output; the two paths differ only downstream of it."""
    torch.manual_seed(3)
    model = create_model(name, num_classes=4, drop_threshold=0.5, drop_prob=1.0).train()
    assert list(model.head.named_children())[-1][0] == last_head_layer
    recorded, original = {}, ops.attentive_dropout

    def recording_dropout(x, threshold, drop_prob, **kwargs):
        out, keep = original(x, threshold, drop_prob, **kwargs)
        recorded.update(x=x.clone(), out=out.clone(), keep=keep)
        return out, keep

    monkeypatch.setattr(ops, "attentive_dropout", recording_dropout)

    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = model(x)
        head_out = model.head(x)
    assert torch.equal(recorded["x"], head_out)
    assert recorded["keep"].sum() < recorded["keep"].numel()  # something was dropped
    with torch.no_grad():  # still in train mode: BatchNorm uses each path's own batch statistics
        torch.testing.assert_close(out["feature"], model.tail(head_out))
        torch.testing.assert_close(out["feature_dropped"], model.tail(recorded["out"]))
    assert not torch.allclose(out["feature"], out["feature_dropped"])


def test_freeze_backbone_bn_keeps_the_pretrained_statistics_and_trains_the_rest():
    """``model.freeze_backbone_bn``: in training mode the backbone's BatchNorm normalises with
    its running statistics (which stay as they were) while its scale/shift still get gradients;
    the new layers' BatchNorm (bn6) uses and updates batch statistics as usual."""
    torch.manual_seed(0)
    model = create_model("vgg_small", 5, freeze_backbone_bn=True).train()
    bns = {n: m for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}
    frozen = {n for n in bns if not model.is_new_parameter(f"{n}.weight")}
    assert frozen and "tail.bn6" in set(bns) - frozen
    assert all(not bns[n].training for n in frozen) and bns["tail.bn6"].training
    before = {n: bns[n].running_mean.clone() for n in bns}
    out = model(torch.randn(4, 3, 64, 64) * 3 + 1)
    out["logits"].sum().backward()
    for n in frozen:
        assert torch.equal(bns[n].running_mean, before[n]), n
        assert bns[n].weight.grad is not None and bns[n].weight.grad.abs().sum() > 0, n
    assert not torch.equal(bns["tail.bn6"].running_mean, before["tail.bn6"])
    model.eval()
    assert not any(m.training for m in bns.values())
    model.train()  # train() again re-applies the freeze
    assert all(not bns[n].training for n in frozen) and bns["tail.bn6"].training
    plain = create_model("vgg_small", 5).train()
    assert all(m.training for m in plain.modules() if isinstance(m, nn.BatchNorm2d))
