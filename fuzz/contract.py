"""The bad-input contract, checked on the real `pehp` CLI in a subprocess.

For a case written to disk, run ``pehp <command> ... -o <out>`` and require: exit code
0, 1 (check, check-tree, simulate) or 2; never a traceback or an "internal error"; on exit 2
exactly one stderr line starting ``pehp: error:`` and no output file (check-tree: one
such line per unreadable pair, and a report of the others is allowed); on success a
report that parses (JSON/SARIF); no stray temporary files; the inputs unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from .cases import Case, Seeds, cli_args, materialize
from .targets import is_document, output_suffix

EXIT_CODES = {"info": {0, 2}, "diff": {0, 2}, "check": {0, 1, 2}, "check-tree": {0, 1, 2},
              "simulate": {0, 1, 2}, "inspect": {0, 1, 2}, "verify": {0, 1, 2}, "emit-final": {0, 1, 2},
              "report": {0, 2}, "plan": {0, 1, 2}}


def pehp_command() -> list[str]:
    exe = Path(sys.executable).with_name("pehp")
    if exe.is_file():
        return [str(exe)]
    return [sys.executable, "-m", "pehotpatch.cli"]


def _digests(root: Path) -> dict[str, str]:
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for fn in files:
            p = Path(dirpath) / fn
            out[p.relative_to(root).as_posix()] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def contract_problems(command: str, document: bool, rc: int, stderr: str, output: Path | None,
                      outdir: Path) -> list[str]:
    """What the finished `pehp` run did wrong (empty when it kept the contract)."""
    problems: list[str] = []
    lines = stderr.splitlines()
    if rc not in EXIT_CODES[command]:
        problems.append(f"exit code {rc}")
    if "Traceback (most recent call last)" in stderr:
        problems.append("a traceback on stderr")
    for line in lines:
        if "internal error" in line or "worker failed" in line:
            problems.append(f"internal error reported: {line}")
    stray = sorted(p.name for p in outdir.iterdir() if p != output)
    if stray:
        problems.append(f"stray files next to the output: {stray}")
    if rc == 2:
        errors = [ln for ln in lines if ln.startswith("pehp: error:")]
        if command == "check-tree":
            if not lines or len(errors) != len(lines):
                problems.append(f"exit 2 without one 'pehp: error:' line per problem: {lines}")
        else:
            if len(lines) != 1 or len(errors) != 1:
                problems.append(f"exit 2 with {len(lines)} stderr lines, not one 'pehp: error:' line: {lines}")
            if output is not None and output.exists():
                problems.append("an output was written although the command failed")
    elif command == "emit-final" and rc == 1:
        if output is not None and output.exists():
            problems.append("a final image was written for a pair the check rejected")
    elif rc in (0, 1) and output is not None and not output.exists():
        problems.append("no output written although the command succeeded")
    if command == "emit-final" and rc == 0 and output is not None and output.exists():
        problems.extend(_final_problems(output))
    if output is not None and output.exists() and document:
        try:
            json.loads(output.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            problems.append(f"the output is not valid JSON: {exc}")
    return problems


def _final_problems(final: Path) -> list[str]:
    """A final image emit-final wrote must read back with a table that keeps every rule."""
    from pehotpatch.errors import PehpError
    from pehotpatch.image.pe_reader import load_pe
    from pehotpatch.table.decode import read_table

    try:
        rd = read_table(load_pe(final))
    except PehpError as exc:
        return [f"the final image does not read back: {exc}"]
    if not rd.valid:
        return [f"the final image's table breaks a rule: {[v.code for v in rd.violations]}"]
    return []


def check_cli(case: Case, seeds: Seeds, workdir: Path, timeout: float = 120.0) -> list[str]:
    """Run ``case`` through the real CLI under ``workdir`` (which must not exist)."""
    inp = materialize(case, seeds, workdir / "in")
    outdir = workdir / "out"
    outdir.mkdir()
    output: Path | None = outdir / f"report{output_suffix(case)}"
    args = cli_args(case, inp, outdir / f"report{output_suffix(case)}")
    if case.command in ("info", "diff", "inspect", "verify", "plan") and case.options.get("format") == "text":
        # -o writes JSON for these; the text report only goes to stdout
        output, args = None, args[:-2]
    before = _digests(inp.root)
    env = dict(os.environ, COLUMNS="120", NO_COLOR="1", PYTHONFAULTHANDLER="1")
    proc = subprocess.Popen([*pehp_command(), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, errors="replace", cwd=workdir, env=env)
    try:
        _, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)  # faulthandler prints where it is
        try:
            _, stderr = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, stderr = proc.communicate()
        return [f"hang: pehp did not exit within {timeout:g} s; its stack:\n{stderr[-4000:]}"]
    problems = contract_problems(case.command, output is not None and is_document(case),
                                 proc.returncode, stderr, output, outdir)
    after = _digests(inp.root)
    if after != before:
        changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
        problems.append(f"input files changed or appeared: {changed}")
    return problems
