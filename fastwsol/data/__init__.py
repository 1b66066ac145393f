"""Data: the wsolevaluation metadata reader (``read_split_metadata``), the DALI pipeline, the
torchvision fallback (``build_loader``), the transforms' constants and the synthetic WSOL dataset
(``make_synthetic_dataset``)."""

from fastwsol.data.base import SplitLoader
from fastwsol.data.images import BadImageError, check_split_images, inspect_image
from fastwsol.data.loader import build_loader, loader_from_config
from fastwsol.data.metadata import (
    BUILTIN_METADATA_ROOT,
    MaskAnnotation,
    SplitMetadata,
    class_names,
    read_split_dir,
    read_split_metadata,
    resolve_metadata_root,
)
from fastwsol.data.synthetic import DATASET_NAME as SYNTHETIC_DATASET
from fastwsol.data.synthetic import ensure_synthetic_dataset, make_synthetic_dataset
from fastwsol.data.transforms import IMAGENET_MEAN, IMAGENET_STD, normalize_on_device

__all__ = [
    "BUILTIN_METADATA_ROOT",
    "MaskAnnotation",
    "SplitMetadata",
    "class_names",
    "read_split_dir",
    "read_split_metadata",
    "resolve_metadata_root",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SYNTHETIC_DATASET",
    "BadImageError",
    "SplitLoader",
    "build_loader",
    "check_split_images",
    "ensure_synthetic_dataset",
    "inspect_image",
    "loader_from_config",
    "make_synthetic_dataset",
    "normalize_on_device",
]
