"""The embedded default end to end: the synthetic datasets, a pretrained backbone (the stand-in
for ImageNet: ``configs/synthetic_pretrain.yaml``), then vanilla CAM vs the method (and the
ablation rows of docs/method.md §7) fine-tuned from it, evaluated on the synthetic test split; a table
shaped like the paper's Table 7 (JSON + Markdown) and a figure comparing CAM, F̂ and S (the
paper's Fig. 6).

``seeds=N`` fine-tunes every variant with training seeds 0..N-1 (``train.seed``: the
initialisation of conv6 and fc, dropout, the epoch plans) and reports each seed's row and the
mean ± sd. The data (generation seed 0) and the pretrained backbone are the same for every
seed, as the paper fine-tunes one ImageNet checkpoint for all its runs: the spread is that of
the fine-tuning.

Every figure is reported with the protocol's multi-contour boxes and with a single contour, plus
the share of inverted maps (:mod:`fastwsol.evaluation.diagnostics`): a multi-contour score alone
rewards maps that are high on the background.

Every run keeps its folder under ``out`` (``out/seed<S>/<variant>``); running again reuses
finished runs and resumes interrupted ones when their recorded config matches, settings the run's
objective does not read aside (other settings are an error naming them; ``fresh=True`` retrains
the fine-tunings, ``fresh_backbone=True`` the pretraining too), so an interrupted reproduction
continues where it stopped. A new ``out`` copies a finished pretraining of the same settings from
the default out or a folder beside it rather than retraining it.

Modules: ``plan`` (what is run: the configs, the datasets, the variants), ``run`` (running it),
``report`` (``results.json`` and ``results.md`` from the runs' metrics), ``figure`` (the maps).
"""

from fastwsol.reproduce.plan import DEFAULT_CONFIG, DEFAULT_OUT, PRETRAIN_CONFIG, PRETRAIN_KEY
from fastwsol.reproduce.report import RESULT_METRICS
from fastwsol.reproduce.run import ensure_dataset, reproduce, train_run

__all__ = [
    "DEFAULT_CONFIG",
    "DEFAULT_OUT",
    "PRETRAIN_CONFIG",
    "PRETRAIN_KEY",
    "RESULT_METRICS",
    "ensure_dataset",
    "reproduce",
    "train_run",
]
