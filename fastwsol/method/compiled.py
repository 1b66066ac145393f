"""The ``"compiled"`` backend: ``torch.compile`` of the reference functions (the spec, fused by
Inductor). Each function is compiled once, lazily, and the compiled callable is cached.

Inside an outer ``torch.compile`` region the plain reference function is returned instead: the
outer compile already fuses it, and nesting a second compiled callable would only add guards.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from fastwsol.method import reference

COMPILED_FUNCTIONS = ("alignment_loss", "attentive_dropout", "consistency_loss")
_cache: dict[str, Callable] = {}


def compiled(name: str) -> Callable:
    """The ``torch.compile``d ``reference.<name>`` (or the reference itself while compiling)."""
    if name not in COMPILED_FUNCTIONS:
        raise ValueError(f"no compiled version of {name!r}; choose one of {COMPILED_FUNCTIONS}")
    function = getattr(reference, name)
    if torch.compiler.is_compiling():
        return function
    if name not in _cache:
        _cache[name] = torch.compile(function, dynamic=False)
    return _cache[name]
