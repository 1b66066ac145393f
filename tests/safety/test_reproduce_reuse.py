"""`fastwsol reproduce` reuses or resumes a run only when its recorded config matches."""

import pytest

from fastwsol.io import load_checkpoint
from fastwsol.reproduce import train_run


def test_reuse_resume_refuse_and_fresh(tiny_run_overrides, tmp_path, hashes, capsys):
    run = tmp_path / "cam"
    overrides = [o for o in tiny_run_overrides(run, "optim.epochs=1", "optim.warm_epochs=0") if not o.startswith("train.out_dir")]
    first = train_run(None, run, overrides, "a tiny run", fresh=False)
    capsys.readouterr()

    before = hashes(run)
    reused = train_run(None, run, [*overrides, "train.progress=true"], "a tiny run", fresh=False)
    assert reused["max_box_acc_v2"] == first["max_box_acc_v2"] and reused["train_seconds"] == first["train_seconds"]
    assert "reusing" in capsys.readouterr().out and hashes(run) == before  # same settings: reused as it is

    with pytest.raises(ValueError, match=r"optim\.lr 0\.01 -> 0\.02.*--fresh"):
        train_run(None, run, [*overrides, "optim.lr=0.02"], "a tiny run", fresh=False)
    assert hashes(run) == before

    # an interrupted run (no test metrics yet) is not resumed with other settings either
    (run / "test_metrics.json").unlink()
    before = hashes(run)
    with pytest.raises(ValueError, match=r"optim\.lr 0\.01 -> 0\.02"):
        train_run(None, run, [*overrides, "optim.lr=0.02"], "a tiny run", fresh=False)
    assert hashes(run) == before
    train_run(None, run, overrides, "a tiny run", fresh=False)
    assert "resuming" in capsys.readouterr().out

    train_run(None, run, [*overrides, "optim.lr=0.02"], "a tiny run", fresh=True)
    assert load_checkpoint(run / "last.pt")["config"]["optim"]["lr"] == 0.02
