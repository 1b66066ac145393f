"""`fastwsol localize` names the box format and the classes."""

import json

from fastwsol.cli import main


def test_localize_names_the_box_format_and_the_classes(tiny_checkpoint, tiny_dataset, capsys):
    image = tiny_dataset.data_root / tiny_dataset.dataset / "c02" / "test_0000.jpg"
    assert main(["localize", str(tiny_checkpoint), str(image), "--json"]) == 0
    out = capsys.readouterr().out
    header, line = out.splitlines()[:2]
    assert "x0,y0,x1,y1 in the original image's pixels" in header and "thresholded at" in header
    assert "class names from the run's metadata" in header
    assert str(image) in line and "box " in line and "top-3:" in line
    assert any(f"{name} ({label})" in line for label, name in enumerate(("red circle", "blue square", "green triangle")))
    result = json.loads(out[out.index("\n[") :])[0]
    assert {c["name"] for c in result["top_classes"]} == {"red circle", "blue square", "green triangle"}
