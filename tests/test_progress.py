"""Progress of a single diff or check: a bar with the stages (load, normalise, correlate,
compare) on stderr when it is a terminal (run here under a pseudo-terminal), nothing when
it is not, nothing with --quiet; stdout is the same either way."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys

import pytest
from conftest import ROOT, SAMPLES

from pehotpatch.api import load_pair
from pehotpatch.diff import diff_images

S = SAMPLES / "x64" / "fix_globals"
PAIR = [str(S / "base.dll"), str(S / "intermediate.dll")]
PEHP = [sys.executable, "-m", "pehotpatch.cli"]
ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")


def run_on_pty(args: list[str]) -> tuple[int, bytes, bytes]:
    """Run pehp with stderr on a pseudo-terminal (stdout a pipe): exit code, stdout, terminal bytes."""
    master, slave = pty.openpty()
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "100"}
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen(PEHP + args, stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL,
                            cwd=ROOT, env=env)
    os.close(slave)
    term = b""
    while True:
        r, _, _ = select.select([master], [], [], 60)
        if not r:
            break
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        term += chunk
    out = proc.stdout.read() if proc.stdout else b""
    code = proc.wait(timeout=120)
    os.close(master)
    return code, out, term


@pytest.mark.parametrize("command", ["diff", "check"])
def test_bar_on_a_terminal_only(command):
    code, out, term = run_on_pty([command, *PAIR])
    text = ANSI.sub(b"", term).decode("utf-8", "replace")
    for stage in ("load", "normalise", "correlate", "compare"):
        assert stage in text, (stage, text)
    assert "4/4" in text and "━" in text  # the bar itself
    # --quiet: nothing on the terminal, same output
    qcode, qout, qterm = run_on_pty([command, *PAIR, "--quiet"])
    assert (qcode, qout) == (code, out) and qterm == b""
    # not a terminal: nothing on stderr
    proc = subprocess.run(PEHP + [command, *PAIR], capture_output=True, cwd=ROOT)
    assert proc.returncode == code and proc.stderr == b"" and proc.stdout == out


def test_hook_sees_the_stages_in_order():
    b, n = load_pair(*PAIR)
    seen: list[tuple[str, int, int]] = []
    d = diff_images(b, n, progress=lambda *a: seen.append(a))
    assert [s for s, *_ in seen] == ["normalise", "correlate", "compare"]
    assert seen[0][2] == len(b.index.functions) + len(n.index.functions)
    assert seen[-1][2] == len(d.correlation.functions)
