"""Missing OpenImages files are named before a run starts, and nothing the user had changes."""

import pytest

from fastwsol.cli import main
from fastwsol.data import BadImageError, build_loader


def train(overrides, tmp_path) -> int:
    defaults = tmp_path / "defaults.yaml"
    defaults.write_text("{}\n")
    return main(["train", "--config", str(defaults), *(a for o in overrides for a in ("--set", o))])


def test_a_missing_mask_file_is_named_by_train_and_by_the_loader(openimages_tree, tiny_openimages_overrides,
                                                                 tmp_path, hashes, capsys):
    tree = openimages_tree(tmp_path / "tree")
    missing = tree.data_root / "OpenImages" / "test" / "c0" / "test1_mc0_0.png"
    missing.unlink()
    before = hashes(tree.root)
    overrides = [*tiny_openimages_overrides(tmp_path / "run"), f"data.data_root={tree.data_root}",
                 f"data.metadata_root={tree.metadata_root}"]
    assert train(overrides, tmp_path) == 2
    err = capsys.readouterr().err
    assert f"1 of the 6 GT mask files of OpenImages/test are missing, e.g. {missing}" in err
    assert f"`fastwsol prepare openimages OPENIMAGES_DIR --out {tree.data_root}` lays out the images and GT masks" in err
    assert hashes(tree.root) == before and not (tmp_path / "run").exists()

    with pytest.raises(BadImageError, match=f"mask file not found: {missing} \\(a GT mask of test/c0/test1.jpg\\)"):
        build_loader(tree.data_root, tree.metadata_root, "OpenImages", "test", train=False, batch_size=2,
                     loader="torch", num_threads=0)
    with pytest.warns(UserWarning, match="skipped 1 of 3"):
        loader = build_loader(tree.data_root, tree.metadata_root, "OpenImages", "test", train=False, batch_size=2,
                              loader="torch", num_threads=0, skip_bad=True)
    assert loader.checked.usable.tolist() == [0, 2]


def test_missing_openimages_images_say_how_to_unpack_them(tiny_openimages_overrides, tmp_path, capsys):
    assert train([*tiny_openimages_overrides(tmp_path / "run"), f"data.data_root={tmp_path / 'none'}"], tmp_path) == 2
    err = capsys.readouterr().err
    assert f"folder '{tmp_path / 'none' / 'OpenImages'}'" in err
    assert f"`fastwsol prepare openimages OPENIMAGES_DIR --out {tmp_path / 'none'}` lays out" in err
