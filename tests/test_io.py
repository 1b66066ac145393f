"""Atomic writers: a failed write keeps the old file and leaves no temporary file behind."""

import os
import stat

import pytest

from fastwsol.io import atomic_file, write_bytes_atomic, write_text_atomic


@pytest.mark.parametrize("durable", [True, False])
def test_a_failed_write_keeps_the_old_content(tmp_path, durable):
    path = tmp_path / "out" / "result.json"
    write_text_atomic(path, "old\n")
    with pytest.raises(RuntimeError, match="disk gone"):
        with atomic_file(path, durable=durable) as handle:
            handle.write(b"half of the new")
            raise RuntimeError("disk gone")
    assert path.read_text() == "old\n"
    assert sorted(p.name for p in path.parent.iterdir()) == ["result.json"]


def test_writes_replace_and_follow_the_umask(tmp_path):
    path = tmp_path / "a.bin"
    write_bytes_atomic(path, b"1")
    write_bytes_atomic(path, b"22", durable=False)
    assert path.read_bytes() == b"22"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask  # not mkstemp's private 0600
