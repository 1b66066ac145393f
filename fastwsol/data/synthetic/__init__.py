"""A synthetic WSOL dataset that carries the paper's phenomenon: ``render`` draws its pictures
(a large class-agnostic body with a small class-specific part), ``storage`` writes a set of them
to disk in the wsolevaluation layout and reuses or replaces such a set."""

from fastwsol.data.synthetic.render import (
    BODY_PALETTE,
    GENERATOR_VERSION,
    MAX_CLASSES,
    MAX_CLASSES_OF_TASK,
    OBJECT_PART_OFFSET,
    OBJECT_PARTS,
    TASKS,
    body_of_class,
    body_tint,
    part_of_class,
    render_sample,
)
from fastwsol.data.synthetic.storage import (
    DATASET_NAME,
    SyntheticPaths,
    SyntheticSpec,
    ensure_synthetic_dataset,
    make_synthetic_dataset,
    recorded_set_changes,
)

__all__ = [
    "BODY_PALETTE",
    "DATASET_NAME",
    "GENERATOR_VERSION",
    "MAX_CLASSES",
    "MAX_CLASSES_OF_TASK",
    "OBJECT_PARTS",
    "OBJECT_PART_OFFSET",
    "TASKS",
    "SyntheticPaths",
    "SyntheticSpec",
    "body_of_class",
    "body_tint",
    "ensure_synthetic_dataset",
    "make_synthetic_dataset",
    "part_of_class",
    "recorded_set_changes",
    "render_sample",
]
