"""The fuzz loop: workers run cases in-process under a time limit and a memory cap; the
parent watches them, collects results and findings, and prints the figures.

Input ``i`` of a run with seed ``s`` is generated from ``random.Random(f"{s}:{i}")``
alone, so runs are deterministic whatever the timing and a finding is reproduced from
its recipe.  Worker ``w`` of ``J`` takes inputs ``w, w+J, w+2J...``.

A failure ("finding") is an exception that is not a PehpError (RecursionError and
MemoryError included), an input exceeding the time limit, a worker dying or hanging
beyond the watchdog, or a broken CLI contract (:mod:`fuzz.contract`).  Each new failure
signature is minimised (edits dropped while the signature stays), run through the real
CLI, and written to ``<out>/findings/``.
"""

from __future__ import annotations

import contextlib
import faulthandler
import hashlib
import json
import multiprocessing as mp
import os
import queue as queue_mod
import random
import shlex
import shutil
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .cases import COMMANDS, ROOT, Case, Seeds, cli_args, generate, materialize
from .contract import check_cli
from .regress import signature_key
from .single import CLI_TIMEOUT, FAILURES, STATUSES, Outcome, execute, minimize, replay, scratch_dir
from .targets import output_suffix


@dataclass
class Config:
    inputs: int = 100_000
    seed: int = 1
    jobs: int = 2
    time_limit: float = 10.0  # seconds per input, in-process
    mem_mb: int = 2048  # address space a worker may add to what it has at start
    cli_every: int = 500  # run every Nth input of each worker through the real CLI too
    corpus: bool = False  # also the real msvc-runtime DLLs (downloaded on first use)
    built: bool = False  # also the PDB reader's C/C++ test programs (built with clang-cl)
    out: Path = ROOT / "fuzz-out"
    commands: tuple[str, ...] = COMMANDS
    minimize: bool = True
    progress: bool = True
    known: frozenset[str] = frozenset()  # signature keys of recorded, not yet fixed failures

    @property
    def watchdog(self) -> float:
        """Wall time after which the parent kills a worker stuck in one input."""
        return max(self.time_limit * 3 + 30, CLI_TIMEOUT + 30)


@dataclass
class Summary:
    config: dict[str, Any]
    inputs: int = 0
    seconds: float = 0.0
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    cli_checks: int = 0
    slowest: dict[str, Any] = field(default_factory=dict)
    findings: list[dict[str, Any]] = field(default_factory=list)
    duplicates: int = 0
    known: dict[str, int] = field(default_factory=dict)  # known issue -> inputs that hit it

    @property
    def rate(self) -> float:
        return self.inputs / self.seconds if self.seconds else 0.0


# ---- workers --------------------------------------------------------------------------------


def _cap_memory(extra_mb: int) -> None:
    import resource

    try:
        with open("/proc/self/status") as fh:
            vm = next(int(ln.split()[1]) * 1024 for ln in fh if ln.startswith("VmSize:"))
    except (OSError, StopIteration):
        vm = 1 << 30
    cap = vm + extra_mb * (1 << 20)
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))


def case_for(cfg: Config, seeds: Seeds, index: int) -> Case:
    return generate(random.Random(f"{cfg.seed}:{index}"), seeds, cfg.commands)


def _worker(wid: int, start: int, cfg: Config, q: Any, current: Any, started: Any,
            scratch: Path) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles ^C
    cfg.out.mkdir(parents=True, exist_ok=True)
    stacks = open(cfg.out / f"worker-{wid}.stacks", "a")  # noqa: SIM115 - lives as long as the worker
    faulthandler.register(signal.SIGUSR1, file=stacks, all_threads=True)
    if cfg.mem_mb:
        _cap_memory(cfg.mem_mb)
    seeds = Seeds(corpus=cfg.corpus, built=cfg.built)
    scratch.mkdir()
    seen: set[str] = set()
    done_here = 0
    try:
        for i in range(start, cfg.inputs, cfg.jobs):
            case = case_for(cfg, seeds, i)
            current[wid] = i
            started[wid] = time.monotonic()
            out = execute(case, seeds, scratch, cfg.time_limit)
            q.put(("result", wid, i, case.command, out.status, out.seconds))
            done_here += 1
            failure: dict[str, Any] | None = None
            if out.status in FAILURES:
                assert out.signature is not None
                if signature_key(out.signature) in cfg.known:
                    q.put(("known", wid, i, signature_key(out.signature)))
                elif out.signature in seen:
                    q.put(("duplicate", wid, i, out.signature))
                else:
                    seen.add(out.signature)
                    failure = {"kind": out.status, "signature": out.signature, "detail": out.detail}
            elif cfg.cli_every and done_here % cfg.cli_every == 0:
                problems = check_cli(case, seeds, _fresh(scratch / "cli"), CLI_TIMEOUT)
                q.put(("cli", wid, i, bool(problems)))
                if problems:
                    sig = f"cli: {problems[0][:80]}"
                    if sig not in seen:
                        seen.add(sig)
                        failure = {"kind": "cli", "signature": sig, "detail": "\n".join(problems)}
            if failure is not None:
                started[wid] = time.monotonic()
                small = case
                if cfg.minimize and failure["kind"] in ("crash", "memory"):
                    small = minimize(case, seeds, scratch, cfg.time_limit, failure["signature"])
                started[wid] = time.monotonic()
                failure["cli"] = check_cli(small, seeds, _fresh(scratch / "cli"), CLI_TIMEOUT)
                q.put(("finding", wid, i, failure, case.to_json(), small.to_json()))
            started[wid] = 0.0
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        q.put(("done", wid))


def _fresh(p: Path) -> Path:
    if p.exists():
        shutil.rmtree(p)
    return p


# ---- the parent ---------------------------------------------------------------------------


class Run:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.summary = Summary(config={k: str(v) if isinstance(v, Path) else
                                       sorted(v) if isinstance(v, frozenset) else v
                                       for k, v in asdict(cfg).items()})
        self.summary.counts = {c: dict.fromkeys(STATUSES, 0) for c in cfg.commands}
        self.seen: set[str] = set()
        self.seeds: Seeds | None = None
        self.findings_dir = cfg.out / "findings"

    def _log(self, msg: str) -> None:
        if self.cfg.progress:
            sys.stderr.write(msg + "\n")
            sys.stderr.flush()

    def run(self) -> Summary:
        cfg = self.cfg
        ctx = mp.get_context("fork")
        q = ctx.Queue()
        current = ctx.Array("q", cfg.jobs, lock=False)
        started = ctx.Array("d", cfg.jobs, lock=False)
        procs: dict[int, Any] = {}

        def spawn(wid: int, start: int) -> None:
            p = ctx.Process(target=_worker, daemon=True,
                            args=(wid, start, cfg, q, current, started, scratch / f"w{wid}-{start}"))
            p.start()
            procs[wid] = p

        scratch = scratch_dir()
        if cfg.corpus or cfg.built:  # download and build once, before the workers look
            self.seeds = Seeds(corpus=cfg.corpus, built=cfg.built)
        t0 = time.perf_counter()
        for wid in range(min(cfg.jobs, cfg.inputs)):
            current[wid] = wid
            spawn(wid, wid)
        live = set(procs)
        last = time.perf_counter()
        try:
            while live:
                try:
                    msg = q.get(timeout=0.5)
                except queue_mod.Empty:
                    msg = None
                if msg is not None:
                    if msg[0] == "done":
                        live.discard(msg[1])
                    else:
                        self._handle(msg)
                for wid in list(live):
                    p = procs[wid]
                    began = started[wid]  # read once: the worker resets it to 0 when done
                    stuck = began > 0 and time.monotonic() - began > cfg.watchdog
                    if stuck or not p.is_alive():
                        self._drain(q, live)
                        if wid not in live:
                            continue
                        i = current[wid]
                        stack = ""
                        if stuck:
                            before = (i, began)
                            stack = self._stack_of(p, wid)
                            if self._progressed(current, started, wid, before):
                                self._log(f"fuzz: worker {wid} was slow on input {i} but moved on")
                                continue
                            p.kill()
                        p.join()
                        kind = "timeout" if stuck else "crash"
                        why = (f"watchdog: no result within {cfg.watchdog:g} s" if stuck
                               else f"worker died (exit code {p.exitcode})")
                        why += stack
                        self._worker_lost(i, kind, why)
                        started[wid] = 0.0
                        if i + cfg.jobs < cfg.inputs:
                            current[wid] = i + cfg.jobs
                            spawn(wid, i + cfg.jobs)
                        else:
                            live.discard(wid)
                now = time.perf_counter()
                if now - last >= 10:
                    last = now
                    s = self.summary
                    self._log(f"fuzz: {s.inputs}/{cfg.inputs} inputs, "
                              f"{s.inputs / (now - t0):.0f}/s, {len(s.findings)} findings")
        except KeyboardInterrupt:
            self._log("fuzz: interrupted")
            for p in procs.values():
                p.kill()
        finally:
            for p in procs.values():
                p.join(timeout=5)
            shutil.rmtree(scratch, ignore_errors=True)  # also what a killed worker left
        self.summary.seconds = time.perf_counter() - t0
        self._write_summary()
        return self.summary

    def _stack_of(self, p: Any, wid: int) -> str:
        """Where a stuck worker is (faulthandler dump on SIGUSR1)."""
        path = self.cfg.out / f"worker-{wid}.stacks"
        before = path.stat().st_size if path.exists() else 0
        with contextlib.suppress(OSError):
            os.kill(p.pid, signal.SIGUSR1)
            time.sleep(1.0)
            with open(path, errors="replace") as fh:
                fh.seek(before)
                return "\n" + fh.read()
        return ""

    @staticmethod
    def _progressed(current: Any, started: Any, wid: int, before: tuple[int, float]) -> bool:
        """Whether a worker the watchdog suspects moves on within a few seconds (a paused
        machine makes every clock jump; a stuck worker stays where it is)."""
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if (current[wid], started[wid]) != before:
                return True
            time.sleep(0.1)
        return False

    def _drain(self, q: Any, live: set[int]) -> None:
        while True:
            try:
                msg = q.get(timeout=0.2)
            except queue_mod.Empty:
                return
            if msg[0] == "done":
                live.discard(msg[1])
            else:
                self._handle(msg)

    def _handle(self, msg: tuple) -> None:
        s = self.summary
        kind = msg[0]
        if kind == "result":
            _, _wid, i, command, status, seconds = msg
            s.inputs += 1
            s.counts[command][status] += 1
            if seconds > s.slowest.get(command, {}).get("seconds", 0.0):
                s.slowest[command] = {"seconds": round(seconds, 3), "input": i}
        elif kind == "cli":
            s.cli_checks += 1
        elif kind == "duplicate":
            s.duplicates += 1
        elif kind == "known":
            s.known[msg[3]] = s.known.get(msg[3], 0) + 1
        elif kind == "finding":
            _, _wid, i, failure, case, small = msg
            self._finding(i, failure, case, small)

    def _worker_lost(self, i: int, kind: str, why: str) -> None:
        if self.seeds is None:
            self.seeds = Seeds(corpus=self.cfg.corpus, built=self.cfg.built)
        case = case_for(self.cfg, self.seeds, i)
        s = self.summary
        s.inputs += 1
        s.counts[case.command]["timeout" if kind == "timeout" else "crash"] += 1
        failure = {"kind": kind, "signature": f"{kind}: {why.splitlines()[0].split(' (')[0]} ({case.command})",
                   "detail": why, "cli": []}
        self._finding(i, failure, case.to_json(), case.to_json())

    def _finding(self, i: int, failure: dict[str, Any], case: dict, small: dict) -> None:
        s = self.summary
        sig = failure["signature"]
        if sig in self.seen:
            s.duplicates += 1
            return
        self.seen.add(sig)
        n = len(s.findings) + 1
        slug = hashlib.sha256(sig.encode()).hexdigest()[:8]
        d = self.findings_dir / f"{n:03d}-{failure['kind']}-{slug}"
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
        recipe = {"signature": sig, "kind": failure["kind"], "input": i, "run_seed": self.cfg.seed,
                  "case": small, "unminimised": case, "cli_problems": failure.get("cli", [])}
        (d / "recipe.json").write_text(json.dumps(recipe, indent=1, sort_keys=True) + "\n")
        (d / "detail.txt").write_text(failure["detail"] + "\n")
        if self.seeds is None:
            self.seeds = Seeds(corpus=self.cfg.corpus, built=self.cfg.built)
        with contextlib.suppress(Exception):  # the recipe is what matters
            small_case = Case.from_json(small)
            inp = materialize(small_case, self.seeds, d / "input")
            args = cli_args(small_case, inp, d / f"report{output_suffix(small_case)}")
            (d / "command.txt").write_text(shlex.join(["pehp", *args]) + "\n")
        entry = {"signature": sig, "kind": failure["kind"], "input": i, "dir": str(d),
                 "cli_problems": failure.get("cli", [])}
        s.findings.append(entry)
        self._log(f"fuzz: FINDING {n}: {sig} (input {i}) -> {d}")

    def _write_summary(self) -> None:
        self.cfg.out.mkdir(parents=True, exist_ok=True)
        doc = asdict(self.summary)
        doc["inputs_per_second"] = round(self.summary.rate, 1)
        (self.cfg.out / "summary.json").write_text(json.dumps(doc, indent=1) + "\n")


def run(cfg: Config) -> Summary:
    return Run(cfg).run()


def format_summary(s: Summary) -> str:
    cfg = s.config
    lines = [
        f"pehp fuzz: {s.inputs} inputs in {s.seconds:.1f} s = {s.rate:.1f} inputs/s "
        f"({cfg['jobs']} workers, seed {cfg['seed']}, limit {cfg['time_limit']:g} s/input, "
        f"memory cap +{cfg['mem_mb']} MiB, real DLLs {'on' if cfg['corpus'] else 'off'}, "
        f"built programs {'on' if cfg['built'] else 'off'})",
        f"  {'command':<11}{'inputs':>8}{'ok':>8}{'error':>8}{'crash':>7}{'timeout':>9}"
        f"{'memory':>8}{'slowest':>10}",
    ]
    for command, c in s.counts.items():
        slow = s.slowest.get(command, {}).get("seconds", 0.0)
        lines.append(f"  {command:<11}{sum(c.values()):>8}{c['ok']:>8}{c['error']:>8}{c['crash']:>7}"
                     f"{c['timeout']:>9}{c['memory']:>8}{slow:>9.2f}s")
    lines.append(f"  CLI subprocess checks: {s.cli_checks}")
    for key, n in sorted(s.known.items()):
        lines.append(f"  known issue (tests/data/fuzz, not fixed yet) hit by {n} inputs: {key}")
    lines.append(f"findings: {len(s.findings)}" + (f" ({s.duplicates} repeats)" if s.duplicates else ""))
    for f in s.findings:
        lines.append(f"  {f['kind']}: {f['signature']} (input {f['input']}) -> {f['dir']}")
        lines += [f"    CLI: {p}" for p in f["cli_problems"]]
    return "\n".join(lines)


__all__ = ["FAILURES", "Config", "Outcome", "Summary", "case_for", "execute", "format_summary", "minimize",
           "replay", "run"]
