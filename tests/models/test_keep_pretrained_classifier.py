"""``model.keep_pretrained_classifier``: ResNet50's fc starts as the pretrained 1000-class
classifier (the authors' ILSVRC setup) or fresh from N(0, 0.01); loaded strictly, refused where
it cannot apply. Weights come from local files only (nothing downloads)."""

import pytest
import torch
from torchvision.models import resnet50

from fastwsol.config import ConfigError, load_config
from fastwsol.models import create_model, model_from_config
from fastwsol.train import build_optimizer


@pytest.fixture(scope="module")
def imagenet_like_weights(tmp_path_factory):
    """A torchvision-format ResNet50 state dict with a 1000-class fc nothing fresh could equal."""
    torch.manual_seed(5)
    state = resnet50(weights=None).state_dict()
    state["fc.weight"].uniform_(-1, 1)
    state["fc.bias"].uniform_(-1, 1)
    path = tmp_path_factory.mktemp("weights") / "resnet50.pth"
    torch.save(state, path)
    return path, state


def keep_config(path, *extra):
    return load_config(None, ["model.name=resnet50", f"model.pretrained={path}",
                              "model.keep_pretrained_classifier=true", *extra])


def test_the_kept_classifier_is_the_files_and_trains_at_the_new_layer_rate(imagenet_like_weights):
    path, state = imagenet_like_weights
    config = keep_config(path, "optim.new_layer_lr_multiplier=10")
    model = model_from_config(config, 1000)
    assert torch.equal(model.fc.weight, state["fc.weight"]) and torch.equal(model.fc.bias, state["fc.bias"])
    assert torch.equal(model.head[0].weight, state["conv1.weight"])  # the backbone as before
    # the authors' classifier group holds fc (lr × lr_classifier_ratio) whether or not it is pretrained
    backbone, new = build_optimizer(model, config).param_groups
    assert {id(p) for p in new["params"]} == {id(model.fc.weight), id(model.fc.bias)}
    assert new["lr"] == pytest.approx(10 * backbone["lr"])


def test_without_the_key_the_classifier_is_fresh_from_n_0_001(imagenet_like_weights):
    path, state = imagenet_like_weights
    torch.manual_seed(0)
    model = create_model("resnet50", 1000, pretrained=path)
    weight = model.fc.weight.detach()
    assert not torch.equal(weight, state["fc.weight"])
    assert abs(weight.std().item() - 0.01) < 5e-4 and abs(weight.mean().item()) < 1e-4  # 2M draws
    assert torch.count_nonzero(model.fc.bias) == 0
    assert torch.equal(model.head[0].weight, state["conv1.weight"])


def test_another_class_count_is_an_error_naming_the_key_and_both_shapes(imagenet_like_weights):
    path, _ = imagenet_like_weights
    with pytest.raises(ValueError, match=r"model\.keep_pretrained_classifier") as info:
        model_from_config(keep_config(path), 200)
    assert "(1000, 2048)" in str(info.value) and "(200, 2048)" in str(info.value)


@pytest.mark.parametrize("dropped", [("fc.bias",), ("fc.weight", "fc.bias")])
def test_a_file_without_the_classifier_is_an_error_naming_the_file(imagenet_like_weights, tmp_path, dropped):
    _, state = imagenet_like_weights
    path = tmp_path / "headless.pth"
    torch.save({k: v for k, v in state.items() if k not in dropped}, path)
    with pytest.raises(ValueError, match=r"headless\.pth.*keep_pretrained_classifier") as info:
        create_model("resnet50", 1000, pretrained=path, keep_pretrained_classifier=True)
    assert all(key in str(info.value) for key in dropped)
    create_model("resnet50", 1000, pretrained=path)  # a fresh fc needs none of it


def test_where_the_key_cannot_apply_it_is_refused():
    with pytest.raises(ConfigError, match=r"model\.keep_pretrained_classifier: needs model\.pretrained"):
        load_config(None, ["model.name=resnet50", "model.keep_pretrained_classifier=true"])
    with pytest.raises(ConfigError, match=r"model\.keep_pretrained_classifier: only resnet50.*not vgg16"):
        load_config(None, ["model.name=vgg16", "model.pretrained=imagenet", "model.keep_pretrained_classifier=true"])
    with pytest.raises(ValueError, match=r"keep_pretrained_classifier needs resnet50"):
        create_model("vgg16", 1000, pretrained="imagenet", keep_pretrained_classifier=True)
    with pytest.raises(ValueError, match=r"keep_pretrained_classifier needs resnet50 with pretrained weights"):
        create_model("resnet50", 1000, keep_pretrained_classifier=True)


def test_a_checkpoints_model_is_built_without_the_pretrained_file(tmp_path):
    """A trained run's weights replace the pretrained ones (load_trained): the file may be gone."""
    config = keep_config(tmp_path / "gone.pth")
    model = model_from_config(config, 1000, load_weights=False)
    assert model.fc.weight.shape == (1000, 2048)
