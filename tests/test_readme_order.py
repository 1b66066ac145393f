"""The README's two commands in its order, in one folder: the main job, then the tests.

The first command's `pip install -e ".[test]"` is what the test run itself stands on, so only
its `fastwsol reproduce` runs here, shortened to a tiny set; the tests then run from the folder
that holds its output, as a user who follows the README runs them."""

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MAIN_JOB = 'pip install -e ".[test]" && fastwsol reproduce'
TEST_COMMAND = "python -m pytest -q"
# the check that every test starts in an empty folder, and tests whose configs name relative paths
# (configs/synthetic.yaml's model.init_from is runs/reproduce/pretrain/last.pt)
FOLDER_SENSITIVE = ("tests/test_hermetic.py", "tests/safety/test_config_errors.py", "tests/safety/test_train_out_dir.py",
                    "tests/safety/test_cli_arguments.py")


def _bash_blocks(text: str) -> list[str]:
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S)]


def test_the_readme_names_the_two_commands_in_this_order():
    blocks = _bash_blocks((REPO / "README.md").read_text())
    assert blocks[:2] == [MAIN_JOB, TEST_COMMAND]


def test_the_tests_pass_in_the_folder_the_main_job_ran_in(tiny_run_overrides, tmp_path):
    overrides = [o for o in tiny_run_overrides(tmp_path / "unused") if not o.startswith("train.out_dir")]
    pretrain = [o for o in overrides if not o.startswith("model.name")]
    fine_tune = [*overrides, "optim.epochs=1", "optim.warm_epochs=0", "train.select_from_epoch=1"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", "fastwsol", "reproduce"]
    for value in fine_tune:
        command += ["--set", value]
    for value in [*pretrain, "optim.epochs=1"]:
        command += ["--pretrain-set", value]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert (tmp_path / "runs" / "reproduce" / "pretrain" / "last.pt").is_file()  # the folder now holds a run

    tests = [str(REPO / name) for name in FOLDER_SENSITIVE]
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-4000:]
    assert re.search(r"\d+ passed", done.stdout) and "failed" not in done.stdout.splitlines()[-1]
