"""Does a patch the gate accepts behave like the fix?  Generated pairs, run in the emulator.

    .venv/bin/python tools/patchproof.py --seeds 0-49 [--jobs 2] [--keep DIR] [--json OUT]
    .venv/bin/python tools/patchproof.py --generator hazard --seeds 0-299 [--alone]
    .venv/bin/python tools/patchproof.py --generator hazard-cpp --seeds 0-99 [--alone]

``tools/pairgate.py`` measures the gate against a reference verdict (the check with both
PDBs).  This tool measures the reference itself against behaviour.  For each seed,
``tools/pairgen.py``'s generator builds a base and an intermediate (look-alikes, renames,
removals with callers switched to a look-alike, moved bodies, inlining, reordered calls,
shared mutable state reached through ``__ref_`` slots) and a second intermediate, "omit",
with one changed function left out of the functions file.  Each intermediate is checked
against the base three ways (a: both PDBs; b: the base DLL alone; c: both DLLs alone), and
a final image is written from it with ``--force`` whatever the verdict.  Then
``pehp simulate`` maps the base, applies the final image's table before the first call and
runs every export of the base on a fixed list of arguments, in the patched base and in
the intermediate alone, then undoes the patch (docs/SIMULATE.md).

The patch misbehaves when the simulation has a finding: a result that differs from the
intermediate's, state written in the patch image instead of the base, a fault, an undo
that does not restore the base.  (State of a new mutable global, one the base does not
have, lives in the patch image as the check's HP404 warning says; the simulation notes it
instead of reporting it when the base's PDB shows the base has no such global.)  A **gate failure** is a check that said "patchable" for a
patch that misbehaves.  A rejection whose patch behaves is counted apart ("rejected, yet
behaves"): the gate was stricter than this run needed (the calls may not reach what the
rejection is about).

``--generator hazard`` takes the pairs of ``tools/hazardgen.py`` instead: each seed's change
is a random combination of the hazards of the gate's rules (a callback slot armed with a new
function, function-pointer identity, a new mutable global, changed const tables, literals
and float constants, run-once initialisers, struct layouts of objects the base built,
ABI-neutral qualifiers, initial values), checked with both PDBs (configuration a) and
simulated the same way; the summary is given per hazard, with the rules of the rejections
whose patch behaves, the seeds whose verdict differs from the one the hazards settle, and
those where a hazard to reject is not named by its rule.  ``--alone`` builds every hazard on
its own on each seed instead of the seeded combination.

Exit code 1 when any gate failure was found.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import hazardgen  # noqa: E402  (tools/ is not a package)
import hazardgen_cpp  # noqa: E402
import pairgate  # noqa: E402
import pairgen  # noqa: E402

#: Arguments each export is called with, in this order (every export once per argument).
#: The generated dispatchers switch on ``x & 7``: these cover every case, and large values
#: take the generated chains' other branches.
ARGUMENTS = (1, 5, 77, 1234, 3, 0xFFF, 42, 0x7FFF_FFFF, 0, 4, 6, 100, 0x10000, 999_999)
CONFIGS = ("a", "b", "c")


@dataclass
class Proof:
    """One intermediate, checked and simulated in one configuration."""

    seed: int
    variant: str  # full | omit
    config: str  # a | b | c
    verdict: str  # patchable | rejected | error
    errors: list[str] = field(default_factory=list)  # rule IDs of the error findings
    behaves: bool | None = None  # the simulation had no finding (None: nothing simulated)
    findings: list[str] = field(default_factory=list)  # the simulation's, "kind: message"
    problem: str = ""  # why nothing was simulated
    notes: list[str] = field(default_factory=list)  # the simulation's
    hazards: list[str] = field(default_factory=list)  # --generator hazard: the injected ones
    expected: str | None = None  # --generator hazard: the verdict the hazards settle, if any

    @property
    def gate_failure(self) -> bool:
        return self.verdict == "patchable" and self.behaves is False


def _exports(dll: Path) -> list[str]:
    from pehotpatch.image.pe_reader import load_pe

    pe = load_pe(dll)
    return sorted(e.name for e in pe.exports if e.name and not e.name.startswith("_"))


def prove(seed: int, variant: str, config: str, d: Path, v: Path) -> Proof:
    """Check, emit (``--force``) and simulate intermediate ``v`` against the base in ``d``."""
    from pehotpatch.api import check_pair, emit_final, simulate
    from pehotpatch.errors import PehpError

    base, inter = d / "base.dll", v / "intermediate.dll"
    pdb_base: Path | None = d / "base.pdb"
    pdb: Path | None = v / "intermediate.pdb"
    if config in ("b", "c"):
        base = pairgate._alone(base, v / f"alone-{config}")
        pdb_base = None
    if config == "c":
        inter = pairgate._alone(inter, v / f"alone-{config}-n")
        pdb = None
    functions = v / "hotpatch_functions.txt"
    out = Proof(seed, variant, config, "error")
    try:
        res = check_pair(base, inter, pdb_base=pdb_base, pdb=pdb, functions_file=functions, jobs=1)
        out.verdict = res.verdict
        out.errors = sorted({f.rule for f in res.findings if f.severity == "error"})
        final = v / f"final-{config}.dll"
        final.unlink(missing_ok=True)
        emit_final(base, inter, final, pdb_base=pdb_base, pdb=pdb, functions_file=functions, force=True,
                   jobs=1)
        calls = [f"{e}({x})" for x in ARGUMENTS for e in _exports(base)]
        sim = simulate(base, final, calls, undo=True, pdb_base=pdb_base, pdb_final=pdb)
    except PehpError as exc:
        out.problem = f"{type(exc).__name__}: {exc}"
        return out
    out.findings = [f"{f.kind}: {f.message}" for f in sim.findings]
    out.notes = list(sim.notes)
    out.behaves = sim.ok
    return out


def run_seed(seed: int, root: Path, size: int = 1) -> list[Proof]:
    d = root / f"seed{seed}"
    _truth, variants = pairgate.build_variants(seed, d, size)
    for ext in ("dll", "pdb"):
        shutil.copy(d / "b" / f"base.{ext}", d / f"base.{ext}")
    return [prove(seed, name, config, d, v) for name, _omitted, v in variants for config in CONFIGS]


#: The hazard generators by --generator name (tools/hazardgen.py: C; tools/hazardgen_cpp.py: C++).
HAZARD_GENERATORS = {"hazard": hazardgen, "hazard-cpp": hazardgen_cpp}


def run_hazard_seed(seed: int, root: Path, hazards: list[str] | None = None,
                    generator: str = "hazard") -> list[Proof]:
    """tools/hazardgen.py's pair of seed (or exactly ``hazards``), proved with both PDBs."""
    d = root / f"seed{seed}"
    pair = HAZARD_GENERATORS[generator].generate(seed, d, hazards)
    proof = prove(seed, "hazard", "a", d, d / "n")
    proof.hazards, proof.expected = pair.hazards, pair.expected
    return [proof]


def _one(job: tuple[int, str, int, str, str | None]) -> list[Proof]:
    seed, root, size, generator, alone = job
    if generator in HAZARD_GENERATORS:
        return run_hazard_seed(seed, Path(root), [alone] if alone else None, generator)
    return run_seed(seed, Path(root), size)


def hazard_summary(proofs: list[Proof], generator: str = "hazard") -> dict:
    """Per hazard, the proofs of the seeds that inject it (a seed counts under each of its hazards)."""
    out: dict = {}
    for name, hz in HAZARD_GENERATORS[generator].HAZARDS.items():
        ps = [p for p in proofs if name in p.hazards]
        behaving_rejections: dict[str, int] = {}
        for p in ps:
            if p.verdict == "rejected" and p.behaves is True:
                for rule in p.errors:
                    behaving_rejections[rule] = behaving_rejections.get(rule, 0) + 1
        out[name] = {
            "seeds": len(ps),
            "patchable_and_behaves": sum(p.verdict == "patchable" and p.behaves is True for p in ps),
            "gate_failures": sum(p.gate_failure for p in ps),
            "rejected_and_misbehaves": sum(p.verdict == "rejected" and p.behaves is False for p in ps),
            "rejected_yet_behaves": sum(p.verdict == "rejected" and p.behaves is True for p in ps),
            "rules_of_rejections_that_behave": dict(sorted(behaving_rejections.items())),
            "not_simulated": sum(p.behaves is None for p in ps),
            "verdict_unexpected": sorted(p.seed for p in ps if p.expected and p.verdict != p.expected),
            # a hazard to reject whose rule is not among the errors (rejected for another reason)
            "rule_missing": sorted(p.seed for p in ps if hz.verdict == "rejected" and hz.rule
                                   and hz.rule not in p.errors),
        }
    return out


def summary(proofs: list[Proof]) -> dict:
    out: dict = {}
    for config in CONFIGS:
        ps = [p for p in proofs if p.config == config]
        out[config] = {
            "checked": len(ps),
            "patchable": sum(p.verdict == "patchable" for p in ps),
            "patchable_and_behaves": sum(p.verdict == "patchable" and p.behaves is True for p in ps),
            "gate_failures": sum(p.gate_failure for p in ps),
            "rejected_and_misbehaves": sum(p.verdict == "rejected" and p.behaves is False for p in ps),
            "rejected_yet_behaves": sum(p.verdict == "rejected" and p.behaves is True for p in ps),
            "not_simulated": sum(p.behaves is None for p in ps),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="0-9", help="e.g. 0-49 or 1,5,9")
    ap.add_argument("--size", type=int, default=1, help="scale of each program (functions per kind)")
    ap.add_argument("--jobs", type=int, default=2, help="seeds built and proved at once")
    ap.add_argument("--keep", type=Path, help="build in this directory and keep it")
    ap.add_argument("--json", type=Path, help="write every proof and the summary here")
    ap.add_argument("--alone", action="store_true",
                    help="--generator hazard: every hazard on its own, on each seed (the change of "
                         "exactly one hazard)")
    ap.add_argument("--generator", choices=("pairgen", "hazard", "hazard-cpp"), default="pairgen",
                    help="tools/pairgen.py's pairs (three configurations, and one with a change left "
                         "out), tools/hazardgen.py's or tools/hazardgen_cpp.py's (both PDBs)")
    args = ap.parse_args(argv)
    root = args.keep or Path(tempfile.mkdtemp(prefix="patchproof-"))
    seeds = pairgen._seeds(args.seeds)
    proofs: list[Proof] = []
    jobs = [(s, str(root), args.size, args.generator, None) for s in seeds]
    if args.alone:  # each hazard on its own, seeds numbered apart (seed, hazard)
        gen = args.generator if args.generator in HAZARD_GENERATORS else "hazard"
        names = HAZARD_GENERATORS[gen].HAZARDS
        jobs = [(s, str(root / h), args.size, gen, h) for h in names for s in seeds]
        seeds = [s for _ in names for s in seeds]
    t0 = time.monotonic()
    try:
        with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            for seed, got in zip(seeds, pool.map(_one, jobs), strict=True):
                proofs.extend(got)
                line = " ".join(f"{p.variant}/{p.config}:{p.verdict[:3]}:" +
                                ("ok" if p.behaves else "-" if p.behaves is None else "MIS") for p in got)
                hz = f" [{', '.join(got[0].hazards)}; expected {got[0].expected or '?'}]" if got[0].hazards else ""
                print(f"seed {seed}: {line}{hz}", flush=True)
                for p in got:
                    if p.hazards:
                        print(f"  errors {','.join(p.errors) or '-'}; {'; '.join(p.findings[:2])[:300]}",
                              flush=True)
                    if p.gate_failure:
                        print(f"GATE FAILURE seed {seed} {p.variant}/{p.config}: patchable, but "
                              f"{'; '.join(p.findings[:3])}", flush=True)
                    elif p.behaves is None:
                        print(f"  not simulated: seed {seed} {p.variant}/{p.config}: {p.problem}", flush=True)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    summ = summary(proofs)
    if args.generator in HAZARD_GENERATORS or args.alone:
        gen = args.generator if args.generator in HAZARD_GENERATORS else "hazard"
        summ = {"a": summ["a"], "hazards": hazard_summary(proofs, gen)}
    print(json.dumps(summ, indent=1))
    print(f"{len(seeds)} seeds in {time.monotonic() - t0:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"summary": summ, "proofs": [asdict(p) for p in proofs]}, indent=1))
    return 1 if any(p.gate_failure for p in proofs) else 0


if __name__ == "__main__":
    sys.exit(main())
