"""Each test starts in an empty working directory of its own (tests/conftest.py), whatever the
folder pytest was started from holds."""

import os
from pathlib import Path


def test_a_test_starts_in_an_empty_folder_of_its_own(tmp_path):
    assert Path.cwd() == tmp_path and not any(tmp_path.iterdir())


def test_a_relative_path_written_by_one_test_is_not_seen_by_the_next(tmp_path):
    Path("runs").mkdir()  # as `fastwsol reproduce` would, relative to the working directory
    assert os.listdir(tmp_path) == ["runs"]
