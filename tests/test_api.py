"""The library API: every docstring example runs (doctest, from the repository root), the
README's Python example runs, and the CLI and the fuzz harness reach pehp only through it."""

from __future__ import annotations

import doctest
import os
import re
from pathlib import Path

import pytest

import pehotpatch
import pehotpatch.api

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def at_root():
    old = os.getcwd()
    os.chdir(ROOT)
    try:
        yield
    finally:
        os.chdir(old)


def test_every_api_example_runs(at_root):
    res = doctest.testmod(pehotpatch.api, optionflags=doctest.ELLIPSIS, verbose=False)
    assert res.attempted >= 20
    assert res.failed == 0


def test_every_public_function_has_an_example():
    for name in pehotpatch.api.__all__:
        fn = getattr(pehotpatch.api, name)
        assert fn.__doc__, name
        assert ">>>" in fn.__doc__ or name in {"diff_loaded", "check_diff", "plan_diff", "FinalImage"}, \
            f"{name} has no example"


def test_api_reexported_from_the_package():
    for name in pehotpatch.api.__all__:
        assert getattr(pehotpatch, name) is getattr(pehotpatch.api, name)


def test_options_are_keyword_only():
    import inspect

    for name in pehotpatch.api.__all__:
        if name == "FinalImage":
            continue
        sig = inspect.signature(getattr(pehotpatch.api, name))
        positional = [p for p in sig.parameters.values()
                      if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        assert len(positional) <= 3, f"{name}: {[p.name for p in positional]}"
        assert all(p.default is inspect.Parameter.empty for p in positional), name


def test_readme_python_example_runs(at_root):
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks, "README has no Python example"
    for code in blocks:
        exec(compile(code, "README.md", "exec"), {})


def test_cli_and_fuzz_use_only_the_api():
    """No CLI command module and no fuzz target loads, diffs or checks by itself."""
    internal = re.compile(r"from pehotpatch\.(image\.loader|diff|check|tree) import (load_image|diff_images|run_check|run_tree)\b")
    for path in [*sorted((ROOT / "pehotpatch" / "cli").glob("*.py")), ROOT / "fuzz" / "targets.py"]:
        assert not internal.search(path.read_text()), path
