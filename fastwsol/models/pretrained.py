"""Loading torchvision-format ImageNet weights into a split (head/tail) backbone."""

from __future__ import annotations

import os
from collections.abc import Callable

import torch

from fastwsol.io import load_checkpoint


def read_state_dict(source: str | os.PathLike, torchvision_weights: str) -> dict[str, torch.Tensor]:
    """``"imagenet"`` → torchvision's standard weights (downloaded on the user's machine);
    otherwise a path to a local torchvision-format state dict."""
    if str(source) == "imagenet":
        from torchvision.models import get_weight

        weights = get_weight(torchvision_weights)
        try:
            return weights.get_state_dict(progress=True)
        except OSError as exc:  # urllib's URLError, a refused connection, a timeout
            model = torchvision_weights.split("_Weights")[0]
            raise ConnectionError(
                f"could not download torchvision's {model} weights (no network?): pass a local file with "
                f"model.pretrained=PATH (a torchvision state dict, from {weights.url}); {exc}"
            ) from exc
    path = os.fspath(source)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"pretrained weight file {path!r} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a garbled file
        raise ValueError(f"pretrained weight file {path!r} is not a readable torch state dict: {exc}") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"pretrained weight file {path!r} does not hold a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_remapped(
    model,
    source: dict[str, torch.Tensor],
    remap: Callable[[str], str | None],
    *,
    origin: str,
) -> None:
    """Copy ``source[k]`` into ``model[remap(k)]`` (``None`` = not used, e.g. the old classifier).

    Every parameter and buffer of the model outside its new layers (``model.is_new_parameter``)
    must receive a tensor of the same shape, or this raises naming the keys at fault.
    """
    target = model.state_dict()
    loaded: dict[str, torch.Tensor] = {}
    for key, value in source.items():
        new_key = remap(key)
        if new_key is None:
            continue
        if new_key not in target:
            raise ValueError(f"{origin}: weight {key!r} maps to {new_key!r}, which the model does not have")
        if target[new_key].shape != value.shape:
            raise ValueError(
                f"{origin}: weight {key!r} has shape {tuple(value.shape)} but the model's {new_key!r} "
                f"has shape {tuple(target[new_key].shape)}"
            )
        loaded[new_key] = value
    missing = [k for k in target if k not in loaded and not model.is_new_parameter(k)]
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise ValueError(f"{origin}: {len(missing)} backbone weights are missing: {shown}")
    model.load_state_dict(loaded, strict=False)


def load_backbone_from_run(model, checkpoint: str | os.PathLike) -> None:
    """Copy the backbone of a fastwsol training checkpoint into ``model`` (same architecture;
    the classifier may have another number of classes). The new layers keep their fresh
    initialisation, as when starting from ImageNet weights."""
    try:
        state = load_checkpoint(checkpoint)["model"]
    except FileNotFoundError as exc:  # say which setting named it
        raise FileNotFoundError(f"model.init_from: {exc}") from exc
    load_remapped(
        model, state, lambda key: None if model.is_new_parameter(key) else key,
        origin=f"backbone of the run checkpoint {os.fspath(checkpoint)!r}",
    )
