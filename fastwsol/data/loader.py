"""``build_loader``: one entry point for the DALI pipeline and the torchvision fallback;
``loader_from_config``: the one mapping of an experiment config to a split's loader."""

from __future__ import annotations

import sys

import torch

from fastwsol.data.base import SplitLoader, resolve_device
from fastwsol.data.dali_loader import dali_start_failure

LOADERS = ("auto", "dali", "torch")
_fallbacks_reported: set[str] = set()  # each reason is printed once per process


class DaliUnavailableError(ValueError):
    """``loader="dali"`` where DALI cannot start; the message says why."""


def build_loader(
    data_root,
    metadata_root,
    dataset: str,
    split: str,
    *,
    train: bool,
    batch_size: int,
    loader: str = "auto",
    device: str | torch.device = "auto",
    num_threads: int = 2,
    seed: int = 0,
    shard_id: int = 0,
    num_shards: int = 1,
    skip_bad: bool = False,
    image_size: int = 224,
    resize_size: int = 256,
    output: str = "float",
    verify: str = "header",
) -> SplitLoader:
    """Batches ``{"images": B×3×S×S, "labels": int64 B, "indices": int64 B}`` on ``device``.

    ``loader``: "dali", "torch" (torchvision/PIL) or "auto" (DALI when it can start on
    ``device``, else the torchvision loader, with one line on stderr saying why; "dali" raises
    :class:`DaliUnavailableError` with that reason instead).
    ``train``: resize to ``resize_size``² → random ``image_size``² crop → random flip, last
    partial batch dropped; eval: resize to ``image_size``², every image exactly once across
    the ``num_shards`` shards. ``output``: "float" (ImageNet-normalised float32, contiguous) or
    "uint8" (a B×3×H×W view of HWC memory; normalise later with :func:`normalize_on_device`,
    which also transposes). ``skip_bad``: leave bad image files
    out (counted in a warning, listed in ``.problems``) instead of raising. ``verify``:
    "header" (cheap checks) or "decode" (decode every file once up front).
    """
    if loader not in LOADERS:
        raise ValueError(f"loader must be one of {LOADERS}, got {loader!r}")
    if loader in ("auto", "dali"):
        failure = dali_start_failure(resolve_device(device))
        if failure is not None and loader == "dali":
            raise DaliUnavailableError(
                f"loader 'dali': {failure}; use the torchvision loader (data.loader: torch or auto)"
            )
        if failure is not None:
            if failure not in _fallbacks_reported:
                _fallbacks_reported.add(failure)
                print(f"fastwsol: {failure}; using the torchvision loader", file=sys.stderr)
            loader = "torch"
        else:
            loader = "dali"
    if loader == "dali":
        from fastwsol.data.dali_loader import DaliSplitLoader as cls
    else:
        from fastwsol.data.torch_loader import TorchSplitLoader as cls
    return cls(
        data_root, metadata_root, dataset, split, train=train, batch_size=batch_size, device=device,
        num_threads=num_threads, seed=seed, shard_id=shard_id, num_shards=num_shards, skip_bad=skip_bad,
        image_size=image_size, resize_size=resize_size, output=output, verify=verify,
    )


def loader_from_config(
    config,
    split: str,
    *,
    batch_size: int,
    device: str | torch.device = "auto",
    shard_id: int = 0,
    num_shards: int = 1,
    **settings,
) -> SplitLoader:
    """The loader of ``split`` for an ``ExperimentConfig``: ``data.*``, the train transform for
    ``"train"`` and the eval transform otherwise, the run's seed, uint8 output (normalised later,
    inside the step or by the caller). ``settings`` override :func:`build_loader` arguments
    (e.g. ``loader="torch"``)."""
    d = config.data
    arguments = dict(
        train=split == "train",
        loader=d.loader,
        num_threads=d.num_threads,
        seed=config.train.seed,
        skip_bad=d.skip_bad,
        image_size=d.image_size,
        resize_size=d.resize_size,
        output="uint8",
    )
    arguments.update(settings)
    return build_loader(
        d.data_root, d.metadata_root, d.dataset, split, batch_size=batch_size, device=device, shard_id=shard_id,
        num_shards=num_shards, **arguments,
    )
