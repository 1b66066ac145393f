"""`fastwsol evaluate-maps` replaces no result file unless asked, and finds that out before
reading a single map; an --out it cannot write is refused as early."""

import numpy as np
import pytest

import fastwsol.evaluate_maps as evaluate_maps
from fastwsol.cli import main

IMAGE_ID = "001.Red/red_1.jpg"


@pytest.fixture
def one_map(tmp_path):
    """(metadata root, score map root) of a one-image CUB test split."""
    split = tmp_path / "metadata" / "CUB" / "test"
    split.mkdir(parents=True)
    (split / "image_ids.txt").write_text(f"{IMAGE_ID}\n")
    (split / "class_labels.txt").write_text(f"{IMAGE_ID},0\n")
    (split / "image_sizes.txt").write_text(f"{IMAGE_ID},300,200\n")
    (split / "localization.txt").write_text(f"{IMAGE_ID},30,20,200,180\n")
    scoremap = np.zeros((224, 224))
    scoremap[40:180, 20:150] = 1
    path = evaluate_maps.scoremap_path(tmp_path / "maps", IMAGE_ID)
    path.parent.mkdir(parents=True)
    np.save(path, scoremap)
    return tmp_path / "metadata", tmp_path / "maps"


def argv(one_map, out, *extra):
    metadata_root, root = one_map
    return ["evaluate-maps", "--scoremap-root", str(root), "--dataset", "CUB", "--metadata-root", str(metadata_root),
            "--cam-curve-interval", "0.05", "--out", str(out), *extra]


@pytest.mark.parametrize("existing", ["evaluate_maps_CUB_test.json", "evaluate_maps_CUB_test.md"])
def test_existing_results_are_refused_unless_overwrite(one_map, tmp_path, hashes, capsys, monkeypatch, existing):
    out = tmp_path / "out"
    assert main(argv(one_map, out)) == 0
    (out / ("evaluate_maps_CUB_test.json" if existing.endswith(".md") else "evaluate_maps_CUB_test.md")).unlink()
    (out / "notes.txt").write_text("the user's own file\n")
    capsys.readouterr()
    before = hashes(out)
    with monkeypatch.context() as patch:
        patch.setattr(evaluate_maps, "read_header", lambda *a: pytest.fail("read a map before refusing"))
        assert main(argv(one_map, out)) == 2
    err = capsys.readouterr().err
    assert f"would replace {out / existing} (--out)" in err and "--overwrite" in err
    assert hashes(out) == before
    assert main(argv(one_map, out, "--overwrite")) == 0
    assert (out / "evaluate_maps_CUB_test.json").is_file() and (out / "evaluate_maps_CUB_test.md").is_file()
    assert (out / "notes.txt").read_text() == "the user's own file\n"


def test_an_out_that_is_a_file_is_refused_before_reading_maps(one_map, tmp_path, hashes, capsys, monkeypatch):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file\n")
    before = hashes(blocker)
    monkeypatch.setattr(evaluate_maps, "read_header", lambda *a: pytest.fail("read a map before refusing"))
    assert main(argv(one_map, blocker)) == 2
    assert f"--out {blocker} is a file, not a folder" in capsys.readouterr().err
    assert hashes(blocker) == before

