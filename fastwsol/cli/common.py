"""What the sub-commands share: their parser class (help that shows defaults), the argument
types, and the options several of them take."""

from __future__ import annotations

import argparse


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """argparse's "(default: X)" after an option's help, unless the help already says its
    default or there is none to show (None, off, an empty list)."""

    def _get_help_string(self, action):
        text = action.help or ""
        nothing = (
            action.default is None
            or action.default is False
            or action.default == []
            or action.default == argparse.SUPPRESS
        )
        if "(default" in text or nothing or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


class SubcommandParser(argparse.ArgumentParser):
    """A sub-command's parser: its help is laid out by :class:`HelpFormatter`, and so is that of
    the sub-commands it adds (argparse makes them of its parent's class)."""

    def __init__(self, *args, formatter_class=HelpFormatter, **kwargs):
        super().__init__(*args, formatter_class=formatter_class, **kwargs)


# ---------------------------------------------------------------------------- argument types
# Each names what it accepts, so argparse prints "argument --x: ..." and exits with status 2.


def device(text: str) -> str:
    """cpu, cuda or cuda:N, and CUDA only where there is one; auto: cuda where there is one,
    else cpu."""
    if text == "cpu":
        return text
    import torch

    if text == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a device; use cpu, cuda or cuda:N") from None
    if parsed.type not in ("cpu", "cuda"):
        raise argparse.ArgumentTypeError(f"{text!r}: fastwsol runs on cpu or cuda (cuda:N)")
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(f"{text!r}: CUDA is not available on this machine; use cpu")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise argparse.ArgumentTypeError(
                f"{text!r}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                f"cuda:0 .. cuda:{torch.cuda.device_count() - 1}"
            )
    return text


def _number(text: str, kind, low=None, high=None, what: str = ""):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
    if (low is not None and value < low) or (high is not None and value > high):
        raise argparse.ArgumentTypeError(f"{text!r}: must be {what}")
    return value


def fraction(text: str) -> float:
    return _number(text, float, 0.0, 1.0, "in [0, 1]")


def count(text: str) -> int:
    return _number(text, int, 1, None, ">= 1")


def non_negative_int(text: str) -> int:
    return _number(text, int, 0, None, ">= 0")


# ------------------------------------------------------------------------- shared options


def add_set_option(parser: argparse.ArgumentParser, help: str, flag: str = "--set") -> None:
    """A repeatable ``flag SECTION.KEY=VALUE`` config override; the values arrive as a list."""
    parser.add_argument(flag, action="append", default=[], metavar="SECTION.KEY=VALUE", help=help)


def add_device_option(parser: argparse.ArgumentParser) -> None:
    # a str default goes through type= when the option is not given: "auto" becomes the device
    parser.add_argument(
        "--device",
        type=device,
        default="auto",
        help="cpu, cuda, cuda:N or auto (default: auto: cuda if available, else cpu)",
    )


def check_output_file(path: str, flag: str, overwrite: bool) -> None:
    """Before any work: ``path`` can be written by ``flag`` (not a folder, in a folder that is
    there or can be made, writable) and is new unless ``overwrite``."""
    import os
    from pathlib import Path

    target = Path(path)
    if target.is_dir():
        raise ValueError(f"{flag} {path} is a folder; give a file name")
    if target.exists() and not overwrite:
        raise ValueError(f"{flag} {path} already exists; pass --overwrite to replace it")
    folder = target.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"{flag} {path}: cannot write into {folder}")
