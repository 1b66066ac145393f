"""The documented Python examples run: every ```python block of README.md, then of docs/api.md,
in order, in one namespace, on tiny data.

The examples name things a user has (their images and labels, CAMs, a dataset folder, ImageNet
weights); the test provides small stand-ins for exactly those and nothing else, so an example
that uses an undefined name, a renamed function or a wrong argument fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

README = Path(__file__).resolve().parents[1] / "README.md"
API_DOC = README.parent / "docs" / "api.md"
EXAMPLE_FILES = (README, API_DOC)


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


@pytest.fixture
def user_side(tmp_path, monkeypatch):
    """The working folder and the names the examples take from the user's side."""
    import torchvision.models

    from fastwsol.data import make_synthetic_dataset
    from fastwsol.evaluation import BoxEvaluator

    # ImageNet weights: torchvision's download replaced by random weights of the same layout.
    class RandomWeights:
        def __init__(self, name):
            self.name = name

        def get_state_dict(self, progress=True):
            architecture = self.name.split("_Weights")[0].lower()
            return getattr(torchvision.models, architecture)(weights=None).state_dict()

    monkeypatch.setattr(torchvision.models, "get_weight", RandomWeights)
    # the dataset folder of the examples (OUT/data, OUT/metadata: `fastwsol make-synthetic OUT`),
    # 36 train images so that one batch of 32 is read
    work = tmp_path / "work"
    make_synthetic_dataset(work / "OUT", classes=3, train_per_class=12, test_per_class=1, seed=0,
                           min_size=64, max_size=96)
    monkeypatch.chdir(work)
    n = 4
    return {
        "images": torch.randn(2, 3, 64, 64),
        "labels": torch.tensor([0, 199]),
        "epochs": 1,
        "batch_indices": np.arange(n),
        "cams": torch.rand(n, 14, 14),
        "top1_correct": np.array([True, False, True, True]),
        "top5_correct": np.ones(n, bool),
        "other_shard": BoxEvaluator(iou_thresholds=(30, 50, 70), cam_curve_interval=0.005, multi_contour=True),
    }


def test_the_readme_and_the_api_doc_have_python_examples():
    assert len(python_blocks(README.read_text())) >= 1
    assert len(python_blocks(API_DOC.read_text())) >= 2


def test_documented_python_examples_run(user_side):
    namespace = dict(user_side)
    for path in EXAMPLE_FILES:
        for number, block in enumerate(python_blocks(path.read_text()), 1):
            where = f"{path.relative_to(README.parent)} python block {number}"
            try:
                exec(compile(block, where, "exec"), namespace)
            except Exception as exc:
                pytest.fail(f"{where} fails: {type(exc).__name__}: {exc}\n{block}")
