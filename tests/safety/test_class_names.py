"""Class names for pictures and `localize`: the synthetic set writes them, CUB's folders give
them, and a dataset without either shows numbers."""

from fastwsol.data.metadata import class_names, read_split_metadata


def test_synthetic_set_names_its_classes(tiny_dataset):
    names = class_names(tiny_dataset.metadata_root, tiny_dataset.dataset)
    assert names == {0: "red circle", 1: "blue square", 2: "green triangle"}


def test_cub_names_come_from_its_folders_and_imagenet_has_none():
    cub = class_names("builtin", "CUB", read_split_metadata("builtin", "CUB", "test"))
    assert len(cub) == 200 and cub[0] == "Black footed Albatross" and cub[199] == "Common Yellowthroat"
    assert class_names("builtin", "ILSVRC", read_split_metadata("builtin", "ILSVRC", "test")) == {}


def test_checkpoints_carry_the_names_and_where_the_run_was_made(tiny_checkpoint, session_working_directory):
    from fastwsol.io import load_checkpoint

    state = load_checkpoint(tiny_checkpoint)  # trained in the session fixtures' working directory
    assert state["class_names"][2] == "green triangle" and state["workdir"] == str(session_working_directory)
