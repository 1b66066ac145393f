"""Every sub-command with bad arguments: exit status 2, one error naming the argument, no
traceback; every option has help text (with its default)."""

import argparse

import pytest
import torch

from fastwsol.cli import build_parser, main


def run(argv, capsys):
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    return code, capsys.readouterr().err


NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["make-synthetic", "{tmp}/s", "--classes", "0"], "argument --classes: '0': must be >= 1"),
        (["make-synthetic", "{tmp}/s", "--seed", "-1"], "argument --seed: '-1': must be >= 0"),
        (["make-synthetic", "{tmp}/s", "--task", "wings"], "argument --task: invalid choice: 'wings'"),
        (["make-synthetic", "{tmp}/s", "--body-cue", "2"], "argument --body-cue: '2': must be in [0, 1]"),
        (["make-synthetic", "{tmp}/s", "--body-groups", "-1"], "argument --body-groups: '-1': must be >= 0"),
        (["make-synthetic", "{tmp}/s", "--classes", "3", "--body-groups", "4"], "body_groups must lie in [0, classes = 3]"),
        (["make-synthetic", "{tmp}/afile"], "is a file, not a folder"),
        (["make-synthetic", "{tmp}/s", "--classes", "41"], "classes must be in [1, 40]"),
        (["train", "--config", "{tmp}/missing.yaml"], "config file '{tmp}/missing.yaml' does not exist"),
        (["train", "--config", "configs/synthetic.yaml", "--set", "lr=1"], "expected section.key=value"),
        (["train", "--config", "configs/synthetic.yaml", "--set", "optim.lr=fast"], "optim.lr: expected a number"),
        (["train", "--config", "configs/synthetic_pretrain.yaml", "--resume", "--out-dir", "{tmp}/none",
          "--set", "data.data_root={tiny}/data", "--set", "data.metadata_root={tiny}/metadata"],
         "--resume: {tmp}/none/last.pt does not exist"),
        (["evaluate", "--checkpoint", "{tmp}/missing.pt"], "checkpoint '{tmp}/missing.pt' does not exist"),
        (["evaluate", "--checkpoint", "{tmp}/afile"], "is not readable"),
        (["evaluate", "--checkpoint", "{tmp}"], "is a folder; give a checkpoint file"),
        pytest.param(["evaluate", "--checkpoint", "x.pt", "--device", "cuda"],
                     "argument --device: 'cuda': CUDA is not available on this machine; use cpu", marks=NO_CUDA),
        (["evaluate", "--checkpoint", "x.pt", "--device", "gpu0"], "argument --device: 'gpu0' is not a device; use cpu, cuda or cuda:N"),
        (["evaluate", "--checkpoint", "x.pt", "--device", "mps"], "argument --device: 'mps': fastwsol runs on cpu or cuda"),
        (["evaluate", "--checkpoint", "x.pt", "--split", "dev"], "argument --split: invalid choice: 'dev'"),
        (["localize", "x.pt", "a.jpg", "--threshold", "1.5"], "argument --threshold: '1.5': must be in [0, 1]"),
        (["localize", "x.pt", "a.jpg", "--threshold", "-3"], "argument --threshold: '-3': must be in [0, 1]"),
        (["localize", "x.pt", "a.jpg", "--map", "heat"], "argument --map: invalid choice: 'heat'"),
        (["localize", "{tmp}/missing.pt", "a.jpg"], "checkpoint '{tmp}/missing.pt' does not exist"),
        (["reproduce", "--out", "{tmp}/afile"], "--out {tmp}/afile is a file, not a folder"),
        (["reproduce", "--set", "optim.lr"], "expected section.key=value"),
        (["prepare", "cub", "{tmp}/nothing", "--out", "{tmp}/root", "--workers", "0"], "argument --workers: '0': must be >= 1"),
        (["prepare", "cub", "{tmp}/nothing", "--out", "{tmp}/root"], "{tmp}/nothing"),
        (["bench", "--only", "evaluator", "nothing"], "--only: unknown benchmark(s) nothing; choose from"),
        (["nothing"], "invalid choice: 'nothing'"),
    ],
)
def test_bad_arguments_exit_2_with_one_clear_error(argv, expected, tmp_path, tiny_dataset, capsys):
    (tmp_path / "afile").write_text("not a folder, not a checkpoint")
    fill = {"tmp": tmp_path, "tiny": tiny_dataset.root}
    code, err = run([a.format(**fill) for a in argv], capsys)
    assert code == 2, err
    assert expected.format(**fill) in err
    assert "Traceback" not in err


def _options():
    parser = build_parser()
    stack = [("fastwsol", parser)]
    while stack:
        name, p = stack.pop()
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                stack += [(f"{name} {n}", sub) for n, sub in action.choices.items()]
            elif not isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
                yield name, p, action


def test_every_option_has_help_and_shows_its_default():
    for name, parser, action in _options():
        where = f"{name} {'/'.join(action.option_strings) or action.dest}"
        assert action.help and action.help != argparse.SUPPRESS, f"{where} has no help text"
        if action.option_strings and action.default not in (None, False, [], argparse.SUPPRESS):
            text = parser.formatter_class("x")._get_help_string(action)
            assert "(default" in text, f"{where} does not show its default {action.default!r}"
