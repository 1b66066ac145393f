"""Data: the DALI pipeline, the torchvision fallback (``build_loader``), the transforms'
constants and the synthetic WSOL dataset (``make_synthetic_dataset``)."""

from fastwsol.data.images import BadImageError, check_split_images, inspect_image
from fastwsol.data.loader import build_loader
from fastwsol.data.synthetic import DATASET_NAME as SYNTHETIC_DATASET
from fastwsol.data.synthetic import make_synthetic_dataset
from fastwsol.data.transforms import IMAGENET_MEAN, IMAGENET_STD, normalize_on_device

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SYNTHETIC_DATASET",
    "BadImageError",
    "build_loader",
    "check_split_images",
    "inspect_image",
    "make_synthetic_dataset",
    "normalize_on_device",
]
