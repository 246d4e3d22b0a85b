"""Nothing lost: inputs are only read, outputs appear whole or not at all.

Every command that writes a file (``info -o``, ``diff -o``, ``check -o`` in all three
formats, ``check-tree -o`` in all three formats) runs here as a child process with an
audit hook (``craft.PEHP_AUDITED``) logging its opens, renames, links and unlinks.
The tests check, from what the child really did:

* inputs (0444 copies of a sample pair) are opened for reading only, and their sha256 and
  mtime are unchanged afterwards;
* the output is written to a temporary file in the target directory, read back, and only
  then linked/renamed into place; an existing output is kept without ``--overwrite``,
  replaced with it; an output that is an input (also by symlink, hard link or another
  spelling), or lies inside an input tree, is refused;
* an unwritable directory, a full disk (RLIMIT_FSIZE) and an interrupt (SIGINT/SIGTERM)
  give one line, exit 2 (130/143 for the signals), and leave no file behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from craft import PEHP, ROOT, run_pehp

from pehotpatch.errors import OutputError
from pehotpatch.output import validate_json, validate_sarif, validate_text, write_atomic

SAMPLE = ROOT / "samples" / "x64" / "fix_globals"
# Root ignores mode bits (CAP_DAC_OVERRIDE); a child started through setpriv without
# that capability in its bounding set is refused like any user.
NO_DAC_OVERRIDE = ("setpriv", "--bounding-set=-dac_override,-dac_read_search")
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


# ---- the inputs: a read-only copy of a sample pair, as two files and as two trees --------
@pytest.fixture
def work(tmp_path: Path) -> Path:
    """``tmp/pair/`` (base.dll/.pdb, intermediate.dll/.pdb, intermediate.objs,
    hotpatch_functions.txt), ``tmp/tree/{base,new}/lib.*`` and an empty ``tmp/out/``;
    every input file is mode 0444."""
    pair = tmp_path / "pair"
    pair.mkdir()
    for name in ("base.dll", "base.pdb", "intermediate.dll", "intermediate.pdb", "hotpatch_functions.txt"):
        shutil.copy2(SAMPLE / name, pair / name)
    shutil.copytree(SAMPLE / "intermediate.objs", pair / "intermediate.objs")
    for side, stem in (("base", "base"), ("new", "intermediate")):
        d = tmp_path / "tree" / side
        d.mkdir(parents=True)
        shutil.copy2(SAMPLE / f"{stem}.dll", d / "lib.dll")
        shutil.copy2(SAMPLE / f"{stem}.pdb", d / "lib.pdb")
    shutil.copy2(SAMPLE / "hotpatch_functions.txt", tmp_path / "tree" / "new" / "lib.hotpatch_functions.txt")
    shutil.copytree(SAMPLE / "intermediate.objs", tmp_path / "tree" / "new" / "lib.objs")
    for p in _input_files(tmp_path):
        p.chmod(0o444)
    (tmp_path / "out").mkdir()
    return tmp_path


def _input_files(root: Path) -> list[Path]:
    return sorted(p for d in ("pair", "tree") for p in (root / d).rglob("*") if p.is_file())


def _fingerprint(root: Path) -> dict[str, tuple[str, int, int]]:
    out = {}
    for p in _input_files(root):
        st = p.stat()
        out[str(p)] = (hashlib.sha256(p.read_bytes()).hexdigest(), st.st_mtime_ns, st.st_mode & 0o777)
    return out


def commands(w: Path, out: Path) -> dict[str, list]:
    pair, tree = w / "pair", w / "tree"
    base, new = pair / "base.dll", pair / "intermediate.dll"
    marks = ["--objects", pair / "intermediate.objs", "--functions-file", pair / "hotpatch_functions.txt"]
    return {
        "info": ["info", new, "--pdb", pair / "intermediate.pdb", *marks, "-o", out],
        "diff": ["diff", base, new, *marks, "--json", "-o", out],
        "check-json": ["check", base, new, *marks, "--format", "json", "-o", out],
        "check-sarif": ["check", base, new, *marks, "--format", "sarif", "-o", out],
        "check-text": ["check", base, new, *marks, "--format", "text", "-o", out],
        "tree-json": ["check-tree", tree / "base", tree / "new", "--format", "json", "-o", out],
        "tree-sarif": ["check-tree", tree / "base", tree / "new", "--format", "sarif", "-o", out],
        "tree-text": ["check-tree", tree / "base", tree / "new", "--format", "text", "-o", out],
    }


PARSES = {
    "info": lambda b: json.loads(b)["schema"],
    "diff": lambda b: json.loads(b)["functions"],
    "check-json": lambda b: json.loads(b)["verdict"],
    "check-sarif": lambda b: json.loads(b)["version"] == "2.1.0" or None,
    "check-text": lambda b: "verdict: PATCHABLE" in b.decode() or None,
    "tree-json": lambda b: json.loads(b),
    "tree-sarif": lambda b: json.loads(b)["version"] == "2.1.0" or None,
    "tree-text": lambda b: "lib.dll" in b.decode() or None,
}
OK_CODES = {"info": 0, "diff": 0}  # check and check-tree: 0 (patchable) for this sample pair


def _audit(log: Path) -> list[tuple[int, str, list]]:
    return [tuple(json.loads(line)) for line in log.read_text().splitlines()]  # type: ignore[misc]


def _writes_to(events, path: Path) -> list:
    """Events that would modify ``path``: a writing open, rename/link onto or from it,
    unlink, chmod, truncate, utime."""
    real = os.path.realpath(path)
    bad = []
    for _pid, event, args in events:
        targets = [a for a in args if isinstance(a, str)]
        if not any(os.path.realpath(t) == real for t in targets):
            continue
        if event == "open":
            mode, flags = args[1], args[2]
            if (isinstance(mode, str) and any(c in mode for c in "wax+")) or (flags or 0) & WRITE_FLAGS:
                bad.append((event, args))
        else:
            bad.append((event, args))
    return bad


def _leftovers(directory: Path, keep: set[str] = frozenset()) -> list[str]:  # type: ignore[assignment]
    return sorted(p.name for p in directory.iterdir() if p.name not in keep)


# ---- every command: read-only inputs, re-read before rename, exists / overwrite ----------
@pytest.mark.parametrize("name", sorted(PARSES))
def test_command_reads_inputs_only_and_publishes_a_checked_output(name, work):
    out = work / "out" / "report.out"
    log = work / "audit.log"
    before = _fingerprint(work)
    # 0444 inputs refuse writing; for root too when setpriv can drop CAP_DAC_OVERRIDE.
    wrap = NO_DAC_OVERRIDE if os.geteuid() == 0 and shutil.which("setpriv") else ()
    r = run_pehp(*commands(work, out)[name], audit=log, wrap=wrap)
    assert r.returncode == OK_CODES.get(name, 0), r.stderr
    assert PARSES[name](out.read_bytes()) is not None
    assert _leftovers(work / "out") == ["report.out"]

    events = _audit(log)
    # Inputs: opened, but never for writing, and never renamed, linked or removed.
    opened = {os.path.realpath(a[0]) for _p, e, a in events if e == "open" and isinstance(a[0], str)}
    for p in _input_files(work):
        assert _writes_to(events, p) == [], p
    assert {os.path.realpath(work / "pair" / "intermediate.dll"), os.path.realpath(work / "tree" / "new" / "lib.dll")} & opened
    # The output: written to a temporary file beside it, read back, then linked into place.
    tmp_writes = [a[0] for _p, e, a in events if e == "open" and isinstance(a[0], str)
                  and Path(a[0]).parent == out.parent and Path(a[0]).name.startswith(".report.out.")
                  and (a[2] or 0) & os.O_CREAT]
    assert len(tmp_writes) == 1, events
    tmp = tmp_writes[0]
    order = [(e, a) for _p, e, a in events if tmp in [x for x in a if isinstance(x, str)]]
    kinds = [(e, a[1] if e == "open" else None) for e, a in order]
    assert kinds[0][0] == "open"
    reread = next(i for i, (e, mode) in enumerate(kinds) if e == "open" and mode in ("r", "rb"))
    publish = next(i for i, (e, _m) in enumerate(kinds) if e in ("os.link", "os.rename"))
    assert reread < publish, kinds
    assert order[publish][1][1] == str(out)
    assert not Path(tmp).exists()

    # An existing output is kept without --overwrite (refused before any work) ...
    first = out.read_bytes()
    out.write_bytes(b"precious\n")
    r = run_pehp(*commands(work, out)[name])
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr == f"pehp: error: {out}: output exists; pass --overwrite to replace it\n"
    assert out.read_bytes() == b"precious\n"
    # ... and replaced with it.
    r = run_pehp(*commands(work, out)[name], "--overwrite")
    assert r.returncode == OK_CODES.get(name, 0), r.stderr
    assert PARSES[name](out.read_bytes()) is not None
    if name not in ("tree-text", "check-text", "diff"):  # texts and timings may differ by a run
        assert out.read_bytes() == first
    assert _leftovers(work / "out") == ["report.out"]
    assert _fingerprint(work) == before


# ---- an output that is an input ----------------------------------------------------------
def _refused(r, path: Path, what: str = "refusing to write the output over an input file") -> None:
    assert r.returncode == 2 and r.stdout == "", r.stderr
    assert r.stderr.splitlines() == [f"pehp: error: {path}: {what}"]


def test_output_equal_to_an_input_is_refused_by_any_spelling(work):
    before = _fingerprint(work)
    pair = work / "pair"
    link = work / "out" / "alias.dll"
    link.symlink_to(pair / "intermediate.dll")
    hard = work / "out" / "hard.pdb"
    os.link(pair / "base.pdb", hard)
    cases = [
        (pair / "intermediate.dll", ["info", pair / "intermediate.dll", "-o", pair / "intermediate.dll", "--overwrite"], None),
        (link, ["info", pair / "intermediate.dll", "-o", link, "--overwrite"], None),
        # another spelling of the same path, relative to the working directory
        (Path("pair/../pair/base.dll"), ["diff", "pair/base.dll", "pair/intermediate.dll", "--json", "-o",
                                         "pair/../pair/base.dll", "--overwrite"], work),
        # the PDB pehp found next to the base image by itself, through a hard link
        (hard, ["check", pair / "base.dll", pair / "intermediate.dll", "-f", "json", "-o", hard, "--overwrite"], None),
        (pair / "hotpatch_functions.txt", ["check", pair / "base.dll", pair / "intermediate.dll", "--functions-file",
                                           pair / "hotpatch_functions.txt", "-o", pair / "hotpatch_functions.txt",
                                           "--overwrite"], None),
    ]
    for dest, args, cwd in cases:
        _refused(run_pehp(*args, cwd=cwd), dest)
    # the PDB found next to the image, not named on the command line
    r = run_pehp("diff", pair / "base.dll", pair / "intermediate.dll", "--json", "-o", pair / "base.pdb", "--overwrite")
    _refused(r, pair / "base.pdb")
    assert _fingerprint(work) == before


def test_check_tree_output_inside_an_input_tree_is_refused(work):
    tree = work / "tree"
    for dest in (tree / "new" / "lib.dll", tree / "base" / "report.sarif"):
        r = run_pehp("check-tree", tree / "base", tree / "new", "-f", "sarif", "-o", dest, "--overwrite")
        assert r.returncode == 2 and r.stdout == ""
        assert r.stderr.splitlines() == [
            f"pehp: error: {dest}: refusing to write the output inside the input directory {dest.parent}"
        ]
        assert not (tree / "base" / "report.sarif").exists()


# ---- an unwritable directory, a full disk --------------------------------------------------
def test_unwritable_output_directory(work):
    wrap: tuple[str, ...] = ()
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root, and no setpriv to drop CAP_DAC_OVERRIDE")
        wrap = NO_DAC_OVERRIDE
    locked = work / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    pair = work / "pair"
    try:
        for out, args in (
            (locked / "report.json", ["diff", pair / "base.dll", pair / "intermediate.dll", "--json"]),
            (locked / "report.sarif", ["check-tree", work / "tree" / "base", work / "tree" / "new", "-f", "sarif"]),
        ):
            r = run_pehp(*args, "-o", out, wrap=wrap)
            assert r.returncode == 2 and r.stdout == "", r.stderr
            assert r.stderr.splitlines() == [f"pehp: error: {out}: permission denied"]
            assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o755)


@pytest.mark.parametrize("name", ["diff", "check-sarif", "tree-text"])
def test_full_disk_leaves_no_file(name, work):
    """RLIMIT_FSIZE of 256 bytes (SIGXFSZ ignored): the write fails with EFBIG, as on a
    full disk (every report here is larger)."""
    out = work / "out" / "report.out"
    r = run_pehp(*commands(work, out)[name], fsize=256)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.splitlines() == [f"pehp: error: {out}: cannot write: File too large"]
    assert _leftovers(work / "out") == []


@contextlib.contextmanager
def _tiny_tmpfs(where: Path):
    where.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(where)],
                       check=True, capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"cannot mount a tmpfs here: {exc}")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=False, capture_output=True, timeout=30)


def test_really_full_disk_leaves_no_file(work):
    """A 16 KiB tmpfs, filled up: ENOSPC (needs mount privileges; skipped otherwise)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    with _tiny_tmpfs(work / "disk") as disk:
        with contextlib.suppress(OSError), open(disk / "filler", "wb") as fh:
            for _ in range(64):
                fh.write(b"\0" * 1024)
                fh.flush()
        out = disk / "report.json"
        r = run_pehp(*commands(work, out)["diff"])
        assert r.returncode == 2 and r.stdout == ""
        assert r.stderr.splitlines() == [f"pehp: error: {out}: cannot write: No space left on device"]
        assert _leftovers(disk) == ["filler"]


# ---- interrupted runs ----------------------------------------------------------------------
def _interrupt(args: list, sig: int, delay: float, *, group: bool) -> tuple[int, str, float]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([*PEHP, *map(str, args)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, env=env, start_new_session=True)
    time.sleep(delay)
    t0 = time.monotonic()
    with contextlib.suppress(ProcessLookupError):
        if group:
            os.killpg(proc.pid, sig)  # like Ctrl-C in a terminal: pool workers get it too
        else:
            proc.send_signal(sig)
    _out, err = proc.communicate(timeout=60)
    return proc.returncode, err, time.monotonic() - t0


def _assert_whole_or_nothing(code: int, err: str, sig: int, directory: Path, out: Path) -> None:
    if code == 0:  # finished before the signal: a whole, parsing output
        assert err == ""
        json.loads(out.read_bytes())
        assert _leftovers(directory) == [out.name]
    else:
        assert code == 128 + sig, err
        assert err.splitlines() == [f"pehp: interrupted by {signal.Signals(sig).name}"]
        assert _leftovers(directory) == []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_at_any_moment_leaves_all_or_nothing(sig, work):
    """The sample pair runs in well under a second: signals at several moments of it,
    from the CLI's imports to the write."""
    pair = work / "pair"
    for k, delay in enumerate((0.2, 0.35, 0.5, 0.7)):
        d = work / "out" / f"{k}"
        d.mkdir()
        out = d / "report.json"
        code, err, _dt = _interrupt(["diff", pair / "base.dll", pair / "intermediate.dll", "--json", "-o", out],
                                    sig, delay, group=bool(k % 2))
        _assert_whole_or_nothing(code, err, sig, d, out)


def test_interrupt_inside_the_write_removes_the_temporary_file(tmp_path):
    """A real SIGINT delivered while the output is being checked (after the temporary
    file is written, before it is renamed): KeyboardInterrupt unwinds, nothing is left."""
    def interrupt_here(_data: bytes) -> None:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(1)  # the handler runs before this returns

    with pytest.raises(KeyboardInterrupt):
        write_atomic(tmp_path / "x.json", b"{}", validate=interrupt_here)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.network
@pytest.mark.parametrize("sig, group", [(signal.SIGINT, True), (signal.SIGTERM, False)])
def test_interrupting_a_long_diff(sig, group, tmp_path):
    """numpy's 20 MB OpenBLAS pair takes several seconds on two workers: the signal lands
    mid-run; the run stops promptly (workers are not waited for) and leaves nothing."""
    import corpus

    try:
        a, b = (corpus.numpy_image(v, "libscipy_openblas64_*.dll") for v in corpus.NUMPY_VERSIONS)
    except Exception as exc:  # no network
        pytest.skip(f"numpy wheels unavailable: {exc}")
    out = tmp_path / "report.json"
    code, err, dt = _interrupt(["diff", a, b, "-o", out], sig, 2.5, group=group)
    assert code == 128 + sig, err
    assert err.splitlines() == [f"pehp: interrupted by {signal.Signals(sig).name}"]
    assert dt < 10
    assert list(tmp_path.iterdir()) == []
    time.sleep(0.5)
    running = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            running.append(cmdline.read_bytes().replace(b"\0", b" ").decode("utf-8", "replace"))
    assert not [c for c in running if str(out) in c]  # no orphaned worker still running


# ---- the validators themselves -------------------------------------------------------------
def test_validators_refuse_what_does_not_parse(tmp_path):
    validate_json(b'{"a": 1}')
    validate_sarif(b'{"version": "2.1.0", "runs": []}')
    validate_text("é\n".encode())
    for fn, bad in ((validate_json, b'{"a": '), (validate_sarif, b'{"version": "2.0.0", "runs": []}'),
                    (validate_sarif, b'[1]'), (validate_text, b"\xff\xfe\x00")):
        with pytest.raises(ValueError):
            fn(bad)
        with pytest.raises(OutputError, match="does not re-parse"):
            write_atomic(tmp_path / "x.out", bad, validate=fn)
        assert list(tmp_path.iterdir()) == []
