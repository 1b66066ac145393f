"""The wsolevaluation protocol (PROTOCOL.md): metadata, score maps, boxes, BoxEvaluator."""

from fastwsol.evaluation.metadata import (
    SplitMetadata,
    read_split_dir,
    read_split_metadata,
    resize_boxes,
)

__all__ = ["SplitMetadata", "read_split_dir", "read_split_metadata", "resize_boxes"]
