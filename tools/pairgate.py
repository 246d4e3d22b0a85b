"""Does a wrong structural pair ever make the gate wrong?  Generated pairs, three ways.

    .venv/bin/python tools/pairgate.py --seeds 0-49 [--ignore HP706] [--keep DIR] [--json OUT]

For each seed, ``tools/pairgen.py``'s generator builds a base and an intermediate (look-
alikes, renames, removals with callers switched to a look-alike, moved bodies, inlining,
reordered calls) and a second intermediate, "omit", rebuilt with one changed function left
out of the functions file (the mistake HP501 must catch).  Each intermediate is checked
against the base (``check_pair``'s engine, what ``pehp check`` runs, in process) and
planned (``plan_diff``, as ``pehp plan``):

  a  both PDBs and the functions file (the reference: every pair is made by name);
  b  the base DLL copied alone (no base PDB), the intermediate with its PDB;
  c  both DLLs copied alone, with the functions file.

A gate failure is b or c saying "patchable" where a says "rejected"; a function that a
reports under HP501 and that no error finding of b or c names, unless the difference is
explained by identical code (a callee renamed or a body moved, paired by content), by a
rename the pairing got right (checked against the generator), or by an unpaired function
reached only from patched or new code; or a record of b's plan that binds a patch-image
function to another base function than its name pair in a, not rejected by HP705 and not
by identical content, or that binds a base function a forward record redirects.  The
reference is checked against the generator too: with the full functions file a should
report no HP501, and with a function left out it should report that function; where it
does not, the line says so (REFERENCE).  ``--ignore`` leaves out a rule's findings (the
gate as it was before that rule).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pairgen  # noqa: E402  (the generator; tools/ is not a package)

CONFIGS = ("a", "b", "c")
#: Errors that reject nearly every check without names whatever the change: a verdict that
#: rests on them alone is noted (the reason a gives is then not seen).
MASKING = {"HP103", "HP503", "HP705"}
#: HP501 differences that are no gate failure: the change a sees is a callee renamed or a
#: body moved, with identical code (a pair by content), or a rename the pairing got right.
BENIGN = {"identical", "rename", "covered"}


@dataclass
class Run:
    """One check (and plan) of one intermediate in one configuration."""

    verdict: str
    rules: list[str]
    errors: list[str]  # rule IDs of the error findings
    hp501: dict[int, str]  # new rva -> symbol
    hp705: set[int]  # new rvas HP705 rejects
    pairs: dict[int, tuple[int, str]]  # new rva -> (base rva, method)
    plan: dict[str, dict[int, int]]  # record kind -> patch rva -> base rva
    names: dict[int, str]  # new rva -> name (the intermediate's own)
    base_names: dict[int, str]  # base rva -> name (as this configuration sees it)
    why_changed: dict[int, tuple[str, str, str]]  # new rva -> (reason, new target, base target)
    named_by: dict[int, set[str]]  # new rva -> the error rules whose findings name that function
    callers: dict[int, set[int]]  # new rva -> the new functions referring to it
    patched: set[int]  # new rvas of the functions the check counts as patched


@dataclass
class Outcome:
    seed: int
    variant: str  # full | omit
    omitted: str | None
    runs: dict[str, Run]
    failures: list[str] = field(default_factory=list)
    reference: list[str] = field(default_factory=list)  # where a disagrees with the generator
    masked: list[str] = field(default_factory=list)  # rejected, but not for a's reason
    causes: list[str] = field(default_factory=list)  # one per failure
    benign: list[tuple[str, str]] = field(default_factory=list)  # (kind, what): HP501 differences that are not


def _run(base: Path, inter: Path, pdb_base: Path | None, pdb: Path | None, functions: Path | None,
         ignore: frozenset[str] = frozenset()) -> Run:
    from pehotpatch.api import check_diff, diff_pair, plan_diff
    from pehotpatch.check import PATCHABLE, REJECTED

    diff = diff_pair(base, inter, pdb_base=pdb_base, pdb=pdb, functions_file=functions, jobs=1)
    res = check_diff(diff)
    if ignore:  # the check as it was before these rules: their findings left out
        res.findings = [f for f in res.findings if f.rule not in ignore]
        res.verdict = REJECTED if any(f.severity == "error" for f in res.findings) else PATCHABLE
    hp501: dict[int, str] = {}
    hp705: set[int] = set()
    for f in res.findings:
        if f.rule == "HP501" and "new_rva" in f.evidence:
            hp501[int(f.evidence["new_rva"], 16)] = f.symbol or "?"
        elif f.rule == "HP705":
            hp705.add(int(f.evidence["new_rva"], 16))
    plan = plan_diff(diff)
    records = {"forward": {r.patch_rva: r.base_rva for r in plan.forward},
               "backward": {r.patch_rva: r.base_rva for r in plan.backward},
               "data": {r.slot_rva: r.base_rva for r in plan.data}}
    pairs = {p.new.rva: (p.base.rva, p.method) for p in diff.correlation.functions}
    names = {fn.rva: fn.name for fn in diff.new.index.functions}
    base_names = {fn.rva: fn.name for fn in diff.base.index.functions}
    why = {fd.new.rva: (fd.reason, fd.ref_difference.new_target if fd.ref_difference else "",
                        fd.ref_difference.base_target if fd.ref_difference else "") for fd in diff.changed_functions}
    errors = sorted({f.rule for f in res.findings if f.severity == "error"})
    by_name = {fn.name: fn.rva for fn in diff.new.index.functions}
    named_by: dict[int, set[str]] = {}
    for f in res.findings:
        if f.severity != "error":
            continue
        rva = int(f.evidence["new_rva"], 16) if isinstance(f.evidence.get("new_rva"), str) else by_name.get(
            f.symbol or "")
        if rva is not None:
            named_by.setdefault(rva, set()).add(f.rule)
    callers: dict[int, set[int]] = {}
    new_ix = diff.new.index
    for rva, code in diff.codes[1].items():
        for _, _, target in code.refs:
            callee = new_ix.function_at(target)
            if callee is not None and callee.rva == target and target != rva:
                callers.setdefault(target, set()).add(rva)
    patched = {by_name[n] for n in res.patched if n in by_name}
    return Run(res.verdict, sorted(res.rule_ids()), errors, hp501, hp705, pairs, records, names, base_names,
               why, named_by, callers, patched)


def _alone(src: Path, dst_dir: Path) -> Path:
    dst_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(src, dst_dir / src.name)
    return dst_dir / src.name


def check_variant(d: Path, v: Path, seed: int, variant: str, omitted: str | None,
                  truth: pairgen.Truth, ignore: frozenset[str] = frozenset()) -> Outcome:
    """d holds base.dll/.pdb; v the intermediate.dll/.pdb and hotpatch_functions.txt."""
    ff = v / "hotpatch_functions.txt"
    base_alone = _alone(d / "b" / "base.dll", d / "base_alone")
    inter_alone = _alone(v / "intermediate.dll", v / "alone")
    runs = {
        "a": _run(d / "b" / "base.dll", v / "intermediate.dll", d / "b" / "base.pdb", v / "intermediate.pdb", ff,
                  ignore),
        "b": _run(base_alone, v / "intermediate.dll", None, v / "intermediate.pdb", ff, ignore),
        "c": _run(base_alone, inter_alone, None, None, ff, ignore),
    }
    out = Outcome(seed, variant, omitted, runs)
    a = runs["a"]
    omitted_rvas = {rva for rva, n in a.names.items() if n == omitted}
    if variant == "full" and a.hp501:
        out.reference.append(f"a reports HP501 with every changed function listed: {sorted(a.hp501.values())}")
    if variant == "omit" and not omitted_rvas & set(a.hp501):
        out.reference.append(f"a does not report the omitted {omitted} (HP501: {sorted(a.hp501.values())})")
    for c in ("b", "c"):
        r = runs[c]
        if a.verdict == "rejected" and r.verdict != "rejected":
            out.failures.append(f"{c}: verdict {r.verdict} where a is rejected ({', '.join(a.errors)})")
            out.causes.append("verdict")
        elif a.errors and not set(r.errors) - MASKING - set(a.errors) and not set(r.errors) & set(a.errors):
            out.masked.append(f"{c}: rejected only by {', '.join(r.errors)} where a is rejected by "
                                f"{', '.join(a.errors)}")
        for rva, sym in sorted(a.hp501.items()):
            if rva in r.hp501:
                continue
            if rva in r.named_by:
                out.benign.append(("reported", f"{c}: {sym} reported by {', '.join(sorted(r.named_by[rva]))}"))
                continue
            kind, why = _why(a, r, rva, truth)
            line = f"{c}: HP501 {sym} missed; {why}"
            if kind in BENIGN:
                out.benign.append((kind, line))
            else:
                out.failures.append(line)
                out.causes.append(kind)
    plan, plan_benign = plan_failures(a, runs["b"])
    out.failures += plan
    out.benign += plan_benign
    out.causes += ["plan"] * len(plan)
    return out


def plan_failures(a: Run, b: Run) -> tuple[list[str], list[tuple[str, str]]]:
    """Records of b's plan that bind a function of the patch image to another base function
    than its name does (a's pair), and that no error rejects; and those that HP705 rejects
    or that name a base function of identical code (benign)."""
    out: list[str] = []
    benign: list[tuple[str, str]] = []
    forwarded = {base_rva: patch for patch, base_rva in b.plan["forward"].items()}
    for kind in ("forward", "backward"):
        for patch, base_rva in sorted(b.plan[kind].items()):
            name = a.names.get(patch, hex(patch))
            want = a.pairs.get(patch, (None, ""))[0]
            clash = forwarded.get(base_rva)
            if want == base_rva and clash in (None, patch):
                continue
            line = (f"b: plan {kind} {name} {hex(patch)} -> base {hex(base_rva)}, a pairs it with "
                    f"{'nothing' if want is None else hex(want)}")
            if patch in b.hp705:
                benign.append(("plan-hp705", line + "; rejected by HP705"))
                continue
            if clash is not None and clash != patch:
                out.append(line + f"; a forward record redirects that base function to "
                           f"{a.names.get(clash, hex(clash))}")
                continue
            how = b.pairs.get(patch, (None, "?"))[1]
            if how == "content-hash":  # identical code: either base function runs the same
                benign.append(("plan-identical", line + " by content-hash (identical code)"))
                continue
            out.append(line + f" by {how}; not rejected by HP705")
    for slot, base_rva in sorted(b.plan["data"].items()):
        if a.plan["data"].get(slot) != base_rva:
            out.append(f"b: plan data slot {hex(slot)} -> base {hex(base_rva)}, a binds "
                       f"{a.plan['data'].get(slot)}")
    return out, benign


def _right(truth: pairgen.Truth, base_name: str, new_name: str) -> bool:
    """Whether the generator made the new function new_name out of base_name (same or moved)."""
    pairs = list(truth.same.items()) + list(truth.moved.items())
    return any(k.split(":", 1)[1] == base_name and v.split(":", 1)[1] == new_name for k, v in pairs)


def _why(a: Run, r: Run, rva: int, truth: pairgen.Truth) -> tuple[str, str]:
    """Why the configuration r does not report the function at rva (changed in a) as changed:
    (cause, explanation)."""
    pa, pr = a.pairs.get(rva), r.pairs.get(rva)
    name = a.names.get(rva, hex(rva))
    if pr is None:
        if pa is None:
            return "other", "unpaired in both"
        base = a.base_names.get(pa[0], hex(pa[0]))
        taker = next((n for n, (b, _) in r.pairs.items() if b == pa[0]), None)
        if taker is None:
            text = f"unpaired, and its base counterpart {base} too"
            loose = sorted(a.names.get(c, hex(c)) for c in r.callers.get(rva, ())
                           if c not in r.patched and c not in r.named_by and c in r.pairs)
            if not loose:
                return "covered", (text + ": every function referring to it is patched, new or reported, so "
                                   "the new code runs wherever it is called")
            return "recall", text + f"; referred to by {', '.join(loose)}, neither patched, new nor reported"
        tname, how = a.names.get(taker, hex(taker)), r.pairs[taker][1]
        text = f"unpaired: its base counterpart {base} is paired with {tname} by {how}"
        if how == "content-hash" and _right(truth, base, tname):
            return "identical", text + " (its body moved there: the same code)"
        return "wrong-pair", text
    if pa is None or pa[0] != pr[0]:
        return "wrong-pair", (f"paired with base {a.base_names.get(pr[0], hex(pr[0]))} by {pr[1]} (a: "
                              f"{a.base_names.get(pa[0], hex(pa[0])) if pa else 'none'})")
    reason, new_t, base_t = a.why_changed.get(rva, ("?", "", ""))
    if not new_t:
        return "other", f"same pair ({pr[1]}), compared equal; a: changed ({reason})"
    by_name = {n: v for v, n in a.names.items()}
    base_by_name = {n: v for v, n in a.base_names.items()}
    nt, bt = by_name.get(new_t.split("+", 1)[0]), base_by_name.get(base_t.split("+", 1)[0])
    tp = r.pairs.get(nt) if nt is not None else None
    text = f"same pair ({pr[1]}), compared equal: a sees {base_t} -> {new_t}"
    if tp is not None and tp[0] == bt:
        text += f", r pairs {new_t} with {base_t} by {tp[1]}"
        if tp[1] == "content-hash":
            return "identical", text + " (the same code)"
        if _right(truth, base_t.split("+", 1)[0], new_t.split("+", 1)[0]):
            return "rename", text + " (a rename: the pair is right)"
        return "wrong-pair", text + f" (a wrong pair hides the change in {name})"
    return "other", text + f" ({reason})"


def omitted_candidate(truth: pairgen.Truth, seed: int) -> str | None:
    """A changed function present under its own name in both builds, to leave out."""
    same_names = {v.split(":", 1)[1] for k, v in truth.same.items() if k == v}
    cands = sorted(n for n in truth.changed if n in same_names)
    return random.Random(seed * 101 + 7).choice(cands) if cands else None


def build_variants(seed: int, d: Path, size: int = 1) -> tuple[pairgen.Truth, list[tuple[str, str | None, Path]]]:
    """Build seed's base in d/b and its intermediates: "full" in d/n and, when a changed
    function can be left out of the functions file, "omit" in d/o; returns the truth and
    (variant, omitted function, directory) per intermediate."""
    base = pairgen.Generator(seed, size).base()
    new, truth, _ = pairgen.mutate(base, seed)
    pairgen.build(pairgen.render_with_switch_wrappers(base, pairgen.base_order(base)), d / "b", "base", None)
    srcs = pairgen.render_with_switch_wrappers(new, pairgen.shuffled_order(new, seed))
    pairgen.build(srcs, d / "n", "intermediate", truth.changed)
    variants: list[tuple[str, str | None, Path]] = [("full", None, d / "n")]
    omitted = omitted_candidate(truth, seed)
    if omitted is not None:
        pairgen.build(srcs, d / "o", "intermediate", truth.changed - {omitted})
        variants.append(("omit", omitted, d / "o"))
    return truth, variants


def run_seed(seed: int, root: Path, size: int = 1, ignore: frozenset[str] = frozenset()) -> list[Outcome]:
    d = root / f"seed{seed}"
    truth, variants = build_variants(seed, d, size)
    return [check_variant(d, v, seed, name, omitted, truth, ignore) for name, omitted, v in variants]


def summary(outs: list[Outcome]) -> dict:
    dist: dict[str, int] = {}
    for o in outs:
        key = f"{o.variant} " + " ".join(f"{c}={o.runs[c].verdict}" for c in CONFIGS)
        dist[key] = dist.get(key, 0) + 1
    causes: dict[str, int] = {}
    benign: dict[str, int] = {}
    for o in outs:
        for c in o.causes:
            causes[c] = causes.get(c, 0) + 1
        for k, _ in o.benign:
            benign[k] = benign.get(k, 0) + 1
    return {"runs": len(outs), "verdicts": dict(sorted(dist.items())),
            "failures": sum(len(o.failures) for o in outs), "causes": dict(sorted(causes.items())),
            "not_failures": dict(sorted(benign.items())),
            "seeds_failing": len({o.seed for o in outs if o.failures}),
            "reference_disagreements": sum(len(o.reference) for o in outs),
            "masked": sum(len(o.masked) for o in outs)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="0-9", help="e.g. 0-49 or 1,5,9")
    ap.add_argument("--size", type=int, default=1, help="scale of each program (functions per kind)")
    ap.add_argument("--keep", type=Path, help="build in this directory and keep it")
    ap.add_argument("--json", type=Path, help="write every outcome here")
    ap.add_argument("--ignore", default="", help="rule IDs whose findings to leave out (e.g. HP706: the gate "
                    "before that rule)")
    args = ap.parse_args(argv)
    root = args.keep or Path(tempfile.mkdtemp(prefix="pairgate-"))
    outs: list[Outcome] = []
    try:
        for seed in pairgen._seeds(args.seeds):
            t = time.monotonic()
            got = run_seed(seed, root, args.size, frozenset(filter(None, args.ignore.split(","))))
            outs += got
            for o in got:
                for line in o.reference:
                    print(f"REFERENCE seed {seed} {o.variant}: {line}")
                for kind, line in o.benign:
                    print(f"benign seed {seed} {o.variant} [{kind}]: {line}")
                for line in o.masked:
                    print(f"masked seed {seed} {o.variant}: {line}")
                for line in o.failures:
                    print(f"FAIL seed {seed} {o.variant}" + (f" (omit {o.omitted})" if o.omitted else "")
                          + f": {line}")
            verdicts = "; ".join(o.variant + " " + "/".join(o.runs[c].verdict[:3] for c in CONFIGS) for o in got)
            print(f"seed {seed}: {verdicts} ({time.monotonic() - t:.1f} s)", flush=True)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    s = summary(outs)
    if args.json:
        args.json.write_text(json.dumps({"summary": s, "outcomes": [
            {"seed": o.seed, "variant": o.variant, "omitted": o.omitted, "failures": o.failures,
             "reference": o.reference, "masked": o.masked, "causes": o.causes, "benign": o.benign,
             "verdicts": {c: o.runs[c].verdict for c in CONFIGS},
             "errors": {c: o.runs[c].errors for c in CONFIGS}} for o in outs]}, indent=1) + "\n")
    print(json.dumps(s, indent=1))
    return 1 if s["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
