"""`fastwsol localize` names the box format, the classes and where its threshold comes from."""

import json

import torch

from fastwsol.cli import main
from fastwsol.io import load_checkpoint


def test_localize_names_the_box_format_and_the_classes(tiny_checkpoint, tiny_dataset, capsys):
    image = tiny_dataset.data_root / tiny_dataset.dataset / "c02" / "test_0000.jpg"
    assert main(["localize", str(tiny_checkpoint), str(image)]) == 0
    header, line = capsys.readouterr().out.splitlines()[:2]
    assert "x0,y0,x1,y1 in the original image's pixels" in header and "thresholded at" in header
    assert "class names from the run's metadata" in header
    assert str(image) in line and "box " in line and "top-3:" in line
    assert any(f"{name} ({label})" in line for label, name in enumerate(("red circle", "blue square", "green triangle")))
    assert main(["localize", str(tiny_checkpoint), str(image), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)[0]
    assert {c["name"] for c in result["top_classes"]} == {"red circle", "blue square", "green triangle"}


def test_the_threshold_names_the_epoch_whose_validation_chose_it(tiny_checkpoint, tiny_dataset, tmp_path, capsys):
    image = tiny_dataset.data_root / tiny_dataset.dataset / "c02" / "test_0000.jpg"
    state = load_checkpoint(tiny_checkpoint)
    best = state["best"]["epoch"]
    assert main(["localize", str(tiny_checkpoint), str(image)]) == 0
    assert f"(validated with this checkpoint, epoch {best})" in capsys.readouterr().out
    later = tmp_path / "last.pt"  # the weights of a later epoch, the best epoch's threshold
    torch.save({**state, "epoch": best + 3}, later)
    assert main(["localize", str(later), str(image)]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert f"validated at epoch {best}, the run's best; this checkpoint is epoch {best + 3}" in header
    assert "validated with the checkpoint" not in header and "validated with this checkpoint" not in header
    assert main(["localize", str(later), str(image), "--threshold", "0.3"]) == 0
    assert "thresholded at 0.3 (from --threshold)" in capsys.readouterr().out
