"""The real-world run: pehp info, diff and check on every image pair of two releases.

    make realworld            # or: .venv/bin/python tools/realworld.py [--out docs/REALWORLD.md]

Downloads (tools/corpus.py, cached under .cache/) the DLLs of msvc-runtime 14.42.34433
and 14.44.35112 and the .pyd/.dll images of the numpy 2.5.4 and 2.5.5 win_amd64 wheels,
pairs images by name (numpy.libs names lose their content hash), and runs the `pehp`
console script on each: ``info --json`` on every image (checked against pefile and
llvm-readobj-22 with tools/infocheck.py), ``diff --json -o`` and ``check --format json
-o`` on every pair.  Exit codes, wall times, each child's peak RSS (wait4) and the
summaries go to a markdown report (default docs/REALWORLD.md) and the raw results to
.cache/realworld/results.json.  Exit status 1 when a run crashed or misbehaved.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import corpus  # noqa: E402
import infocheck  # noqa: E402

TIMEOUT = 900.0
OUT_DIR = ROOT / ".cache" / "realworld"


@dataclass
class Proc:
    code: int
    seconds: float
    rss_mib: float  # the pehp process's own peak RSS (wait4)
    tree_mib: float  # peak of the summed PSS of it and its worker processes (sampled)
    stderr: str


def _tree_pss_kib(pid: int) -> int:
    """Proportional set size of ``pid`` and its descendants: pages the forked workers share
    with their parent count once in total."""
    total = 0
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
                    break
            for task in Path(f"/proc/{p}/task").iterdir():
                todo.extend(int(c) for c in (task / "children").read_text().split())
        except (OSError, ValueError):
            continue
    return total


@dataclass
class Pair:
    set: str
    name: str
    base: str
    new: str
    size_base: int
    size_new: int
    info: list[Proc] = field(default_factory=list)
    info_agrees: dict[str, list[str]] = field(default_factory=dict)
    diff: Proc | None = None
    diff_summary: dict[str, Any] = field(default_factory=dict)
    check: Proc | None = None
    verdict: str | None = None
    counts: dict[str, int] = field(default_factory=dict)
    rules: dict[str, int] = field(default_factory=dict)
    rule_titles: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def pehp_command() -> list[str]:
    script = Path(sys.executable).with_name("pehp")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from pehotpatch._entry import main; sys.exit(main())"]


def run(args: list[str]) -> tuple[Proc, str]:
    """Run `pehp ARGS`; returns its exit code, wall time, peak RSS and stderr, and stdout."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.monotonic()
        proc = subprocess.Popen([*pehp_command(), *args], stdout=out, stderr=err, cwd=ROOT)
        tree = 0
        while True:
            tree = max(tree, _tree_pss_kib(proc.pid))
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() - t0 > TIMEOUT:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.02)
        dt = time.monotonic() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stderr = err.read().decode("utf-8", "replace")
        own = usage.ru_maxrss / 1024
        return Proc(proc.returncode, round(dt, 2), round(own, 1), round(tree / 1024, 1), stderr), \
            out.read().decode("utf-8", "replace")


# ---- the corpus -------------------------------------------------------------------------
_HASHED = re.compile(r"^(?P<stem>.+)-[0-9a-f]{32}(?P<ext>\.dll)$", re.I)


def _key(rel: str) -> str:
    head, _, name = rel.rpartition("/")
    m = _HASHED.match(name)
    if m:
        name = m.group("stem") + m.group("ext")
    return f"{head}/{name}" if head else name


def image_pairs() -> list[tuple[str, str, Path, Path]]:
    """``(set, name, base, new)`` for every same-named image of the two releases."""
    out = []
    sets = (("msvc-runtime", corpus.msvc_runtime, corpus.MSVC_RUNTIME_VERSIONS),
            ("numpy", corpus.numpy, corpus.NUMPY_VERSIONS))
    for label, fetch, versions in sets:
        a, b = (fetch(v) for v in versions)
        side = [{_key(p.relative_to(d).as_posix()): p for p in sorted(d.rglob("*"))
                 if p.suffix.lower() in (".dll", ".pyd")} for d in (a, b)]
        for key in sorted(side[0].keys() & side[1].keys()):
            out.append((f"{label} {versions[0]} → {versions[1]}", key, side[0][key], side[1][key]))
        for key in sorted(side[0].keys() ^ side[1].keys()):
            print(f"note: {label}: {key} is in one release only", file=sys.stderr)
    return out


# ---- one pair ---------------------------------------------------------------------------
def run_pair(label: str, name: str, base: Path, new: Path, work: Path) -> Pair:
    p = Pair(label, name, str(base.relative_to(ROOT)), str(new.relative_to(ROOT)),
             base.stat().st_size, new.stat().st_size)
    for side in (base, new):
        proc, stdout = run(["info", str(side), "--json"])
        p.info.append(proc)
        if proc.code != 0:
            p.problems.append(f"info {side.name} exited {proc.code}: {proc.stderr.strip()[:200]}")
            continue
        for who, diffs in infocheck.check_image(side, json.loads(stdout)).items():
            p.info_agrees.setdefault(who, []).extend(f"{side.name}: {d}" for d in diffs)
    diff_out = work / "diff.json"
    p.diff, _ = run(["diff", str(base), str(new), "--json", "-o", str(diff_out), "--overwrite"])
    if p.diff.code == 0:
        doc = json.loads(diff_out.read_text())
        p.diff_summary = doc["summary"]
        p.notes = sorted(set(doc["base"]["notes"]) | set(doc["intermediate"]["notes"]))
    else:
        p.problems.append(f"diff exited {p.diff.code}: {p.diff.stderr.strip()[:200]}")
    check_out = work / "check.json"
    p.check, _ = run(["check", str(base), str(new), "--format", "json", "-o", str(check_out), "--overwrite"])
    if p.check.code in (0, 1):
        doc = json.loads(check_out.read_text())
        p.verdict = doc["verdict"]
        p.counts = doc["summary"]
        p.rules = dict(sorted(collections.Counter(f["rule"] for f in doc["findings"]).items()))
        p.rule_titles = {f["rule"]: f["title"] for f in doc["findings"]}
        if p.check.code == 1 and not any(f["severity"] == "error" for f in doc["findings"]):
            p.problems.append("check rejected without an error finding")
    else:
        p.problems.append(f"check exited {p.check.code}: {p.check.stderr.strip()[:200]}")
    for who, diffs in p.info_agrees.items():
        if diffs:
            p.problems.append(f"info disagrees with {who}: {diffs[0]}")
    return p


# ---- the report -------------------------------------------------------------------------
def _mib(n: int) -> str:
    return f"{n / 1024**2:.1f}" if n >= 1024**2 else f"{n / 1024**2:.2f}"


def _machine() -> tuple[str, str]:
    """(machine line, commit line), from the benchmark's own description of the machine."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("pehp_bench_run", ROOT / "bench" / "run.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench  # its dataclasses look their module up
    spec.loader.exec_module(bench)
    m = bench.machine_info()
    machine = (f"{m['platform']}, {m['cpu'] or platform.machine()}, {m['nproc']} cores, "
               f"{m['mem_bytes'] / 1024**3:.0f} GiB RAM, Python {m['python']}")
    commit = m["git_commit"] + (" (with uncommitted changes to pehotpatch/)" if m["pehotpatch_worktree_dirty"] else "")
    return machine, commit


BEGIN = "<!-- realworld:begin (generated by make realworld; edits between the markers are lost) -->"
END = "<!-- realworld:end -->"


def render(pairs: list[Pair], started: str, wall: float) -> str:
    machine, commit = _machine()
    lines = [
        BEGIN,
        "",
        f"- date: {started} (whole run {wall:.0f} s)",
        f"- commit: {commit}",
        f"- machine: {machine}",
        "- command per image: `pehp info IMAGE --json`, compared with pefile and `llvm-readobj-22` "
        "(`tools/infocheck.py`: machine, image base, entry point, sections, exports, imports, load config, CodeView)",
        "- command per pair: `pehp diff BASE NEW --json -o F`, `pehp check BASE NEW --format json -o F` "
        "(no PDBs, objects or functions file: none are published for these releases)",
        "- time is wall-clock seconds; memory is in MiB: the peak resident set of the pehp process "
        "(wait4) and, after the slash, the peak proportional set size of it and its worker processes "
        "together (sampled every 20 ms from /proc/PID/smaps_rollup; shared pages count once)",
        "",
    ]
    crashed = [p for p in pairs if p.problems]
    n_img = sum(len(p.info) for p in pairs)
    agree = sum(1 for p in pairs if len(p.info) == 2 and set(p.info_agrees) == {"pefile", "llvm-readobj"}
                and not any(p.info_agrees.values()))
    lines += [
        "## Summary",
        "",
        f"- {len(pairs)} image pairs, {n_img} `info` runs, {2 * len(pairs)} `diff`/`check` runs; "
        f"runs that crashed or misbehaved: {len(crashed)}"
        + (" (" + "; ".join(f"{p.name}: {p.problems[0]}" for p in crashed[:5]) + ")" if crashed else ""),
        f"- `info` agrees with pefile and llvm-readobj-22 on both images of {agree} of {len(pairs)} pairs",
    ]
    verdicts = collections.Counter(p.verdict for p in pairs)
    lines.append("- `check` verdicts: " + ", ".join(f"{v} {n}" for v, n in sorted(verdicts.items(), key=str)))
    rules: collections.Counter[str] = collections.Counter()
    titles: dict[str, str] = {}
    for p in pairs:
        rules.update({r: 1 for r in p.rules})
        titles.update(p.rule_titles)
    lines += _memory_lines(pairs)
    lines += ["", "## Why the release pairs are rejected", "",
              "A release pair is not a hot-patch pair, and `check` says so with named findings. "
              "How many pairs raise each rule:", "",
              "| rule | pairs | title |", "|---|---:|---|"]
    for rule, n in sorted(rules.items()):
        lines.append(f"| [{rule}](rules/{rule}.md) | {n} | {titles.get(rule, '')} |")
    for label in dict.fromkeys(p.set for p in pairs):
        lines += ["", f"## {label}", "",
                  "| image | MiB base/new | info s (RSS) | diff s (RSS) | paired | changed | through data "
                  "| added | removed | check | verdict: errors/warnings/notes | rule IDs (count) |",
                  "|---|---|---|---|---:|---:|---:|---:|---:|---|---|---|"]
        for p in (p for p in pairs if p.set == label):
            s = p.diff_summary
            info = max(p.info, key=lambda x: x.seconds) if p.info else None
            info_cell = f"{info.seconds:.2f} ({info.rss_mib:.0f})" if info else "-"
            diff_cell = f"{p.diff.seconds:.1f} ({p.diff.rss_mib:.0f}/{p.diff.tree_mib:.0f})" if p.diff else "-"
            check_cell = f"exit {p.check.code}, {p.check.seconds:.1f} s" if p.check else "-"
            verdict = (f"{p.verdict}: {p.counts.get('errors', 0)}/{p.counts.get('warnings', 0)}/"
                       f"{p.counts.get('notes', 0)}") if p.verdict else "-"
            rule_cell = ", ".join(f"{r} ({n})" for r, n in p.rules.items())
            if p.problems:
                rule_cell += " **" + "; ".join(p.problems) + "**"
            lines.append(
                f"| {p.name} | {_mib(p.size_base)}/{_mib(p.size_new)} | {info_cell} | {diff_cell} | "
                f"{s.get('paired', '-')} | {s.get('changed', '-')} | {s.get('changed_through_data', '-')} | "
                f"{s.get('added', '-')} | {s.get('removed', '-')} | {check_cell} | {verdict} | {rule_cell} |")
    lines += ["", END]
    return "\n".join(lines) + "\n"


def _memory_lines(pairs: list[Pair]) -> list[str]:
    """Peak memory against input size: a fixed part (the interpreter and pehp's modules,
    taken from the smallest pair) plus a multiple of the two inputs' size."""
    runs = [(p, p.diff, p.check) for p in pairs if p.diff and p.check and p.diff.code == 0]
    if not runs:
        return []
    small = min(runs, key=lambda r: r[0].size_base + r[0].size_new)
    fixed = max(small[1].rss_mib, small[2].rss_mib, small[1].tree_mib, small[2].tree_mib)
    out = []
    worst = 0.0
    for p, d, c in runs:
        size = (p.size_base + p.size_new) / 1024**2
        peak = max(d.tree_mib, c.tree_mib, d.rss_mib, c.rss_mib)
        if size >= 1:
            worst = max(worst, (peak - fixed) / size)
    big = max(runs, key=lambda r: r[0].size_base)
    p, d, c = big
    size = (p.size_base + p.size_new) / 1024**2
    out.append(f"- memory: the smallest pair peaks at {fixed:.0f} MiB (interpreter and modules); above that, "
               f"`diff`/`check` took at most {worst:.1f} MiB per MiB of input on pairs of 1 MiB or more; the "
               f"largest pair ({p.name}, {size:.1f} MiB together) peaked at {max(d.tree_mib, c.tree_mib):.0f} MiB PSS "
               f"with its workers ({max(d.rss_mib, c.rss_mib):.0f} MiB in the main process)")
    out.append(f"- time: slowest `info` {max(x.seconds for q in pairs for x in q.info):.2f} s, slowest `diff` "
               f"{max(r[1].seconds for r in runs):.1f} s, slowest `check` {max(r[2].seconds for r in runs):.1f} s")
    return out


def write_report(path: Path, block: str) -> None:
    """Replace the generated block of ``path`` (between the markers), keeping the text around it."""
    old = path.read_text() if path.exists() else ""
    if BEGIN in old and END in old:
        head, _, rest = old.partition(BEGIN)
        _, _, tail = rest.partition(END + "\n")
        text = head + block + tail
    else:
        text = "# Real-world run: two releases of msvc-runtime and numpy\n\n" + block
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "REALWORLD.md", help="markdown report")
    ap.add_argument("--only", help="run only pairs whose name contains this")
    args = ap.parse_args(argv)
    os.environ["PEHP_NO_CACHE"] = "1"  # the times below are computed runs (pehotpatch/cache.py)
    started = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    t0 = time.monotonic()
    pairs = image_pairs()
    if args.only:
        pairs = [x for x in pairs if args.only in x[1]]
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    results = []
    with tempfile.TemporaryDirectory(dir=OUT_DIR) as tmp:
        for k, (label, name, base, new) in enumerate(pairs, 1):
            p = run_pair(label, name, base, new, Path(tmp))
            results.append(p)
            print(f"[{k}/{len(pairs)}] {name}: diff {p.diff.code if p.diff else '-'} "
                  f"{p.diff.seconds if p.diff else 0:.1f}s, check {p.check.code if p.check else '-'} "
                  f"{p.verdict or ''} {', '.join(p.rules)}" + (f"  PROBLEMS: {p.problems}" if p.problems else ""),
                  file=sys.stderr)
    wall = time.monotonic() - t0
    (OUT_DIR / "results.json").write_text(json.dumps([asdict(p) for p in results], indent=1))
    write_report(args.out, render(results, started, wall))
    print(f"wrote {args.out} and {OUT_DIR / 'results.json'}", file=sys.stderr)
    return 1 if any(p.problems for p in results) else 0


if __name__ == "__main__":
    sys.exit(main())
