"""Generated base/intermediate pairs that try to mislead the structural pairing.

    .venv/bin/python tools/pairgen.py --seeds 0-49 [--keep DIR]

For each seed a deterministic generator writes two C units for a base and an
intermediate: look-alike functions (one shape, different constants and callees),
macro-instantiated families, switch tables dispatching to look-alikes, callers, a
static function of one name in both units, and between the builds: definitions
reordered, bodies changed, functions renamed, removed (their callers call another)
and added, bodies moved into a new function behind a thin wrapper of the old name,
static leaves called from one place inlined, and callers calling in another order.  Both
builds are compiled with clang-cl-22 and linked with lld-link-22 (x64, /O2 /Z7 /Gy
/hotpatch, CRT-free, a few exports); the intermediate marks its changed functions with
``-fms-secure-hotpatch-functions-file``.

``pehp diff`` then pairs the two DLLs copied alone (no PDB), and every pair is named
through the PDBs (unit and name): a pair whose sides are different functions, by the
generator's own record of renames, is wrong.  A base function paired with the new
function its body moved to is counted apart (``moved``).  Recall: of the functions
present in both builds (by the PDBs), how many pehp paired.
"""

from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

CLANG = "clang-cl-22"
LLD = "lld-link-22"
CFLAGS = ["--target=x86_64-pc-windows-msvc", "/nologo", "/c", "/O2", "/Z7", "/GS-", "/Zl", "/Gy",
          "/hotpatch", "/Brepro", "-ffile-compilation-dir=.", "/Gs1000000"]
UNITS = ("ga", "gb")

SUPPORT_C = r"""
int __stdcall DllMain(void *instance, unsigned long reason, void *reserved)
{
    (void)instance; (void)reason; (void)reserved;
    return 1;
}
typedef struct { unsigned int Size; unsigned char rest[0x140 - 4]; } pehp_load_config;
const pehp_load_config _load_config_used = {.Size = sizeof(pehp_load_config)};
"""

NOINLINE = "__declspec(noinline)"


@dataclass
class Func:
    name: str
    unit: str
    shape: str  # arith | chain | loop | glob | fam | switch | caller | wrapper
    consts: list[int]
    callees: list[str] = field(default_factory=list)
    static: bool = True
    inline: bool = False  # __forceinline instead of noinline
    export: bool = False

    def key(self) -> str:
        return f"{self.unit}:{self.name}"


@dataclass
class Program:
    funcs: dict[str, Func]  # by unique id (not the C name: statics of one name live in both units)
    families: int

    def units(self) -> dict[str, list[Func]]:
        out: dict[str, list[Func]] = {u: [] for u in UNITS}
        for f in self.funcs.values():
            out[f.unit].append(f)
        return out


@dataclass
class Truth:
    same: dict[str, str]  # base key -> intermediate key of the same function
    moved: dict[str, str]  # base key -> key of the new function its body moved into
    changed: set[str]  # intermediate C names to mark for hot patching


def _body(f: Func, prog: Program, ids: dict[str, Func]) -> str:
    k = f.consts
    c = [ids[i].name for i in f.callees]
    if f.shape == "arith":
        return f"return (x * {k[0]} + {k[1]}) ^ (x >> {k[2] % 7 + 1});"
    if f.shape == "chain":
        return (f"int r = {c[0]}(x + {k[0]});\n    if (r > {k[1]}) r = {c[1]}(r - {k[2]});\n"
                f"    return r + {k[3]};")
    if f.shape == "loop":
        return (f"int s = {k[0]};\n    for (int i = 0; i < (x & {k[1] % 31 + 1}); i++) "
                f"s += {f.unit}_tab[(i + {k[2]}) & 15] * {k[3]};\n    return s;")
    if f.shape == "glob":
        return f"{f.unit}_state += x * {k[0]};\n    return {f.unit}_state ^ {k[1]};"
    if f.shape == "switch":
        cases = "".join(f"\n    case {i}: return {n}(x + {k[i % len(k)]});" for i, n in enumerate(c))
        return f"switch (op) {{{cases}\n    default: return {k[0]};\n    }}"
    if f.shape == "caller":
        calls = " + ".join(f"{n}(x + {k[i % len(k)]})" for i, n in enumerate(c))
        return f"int r = {calls};\n    {f.unit}_state ^= r;\n    return r;"
    if f.shape == "wrapper":
        return f"return {c[0]}(x);"
    raise AssertionError(f.shape)


def _proto(f: Func) -> str:
    storage = "static " if f.static else ""
    attr = "__forceinline" if f.inline else NOINLINE
    if f.export:
        attr = "__declspec(dllexport) " + attr
    params = "int op, int x" if f.shape == "switch" else "int x"
    return f"{storage}{attr} int {f.name}({params})"


def render(prog: Program, order: dict[str, list[str]]) -> dict[str, str]:
    """C source per unit; order: the ids of each unit's functions in definition order."""
    ids = prog.funcs
    out = {}
    for unit in UNITS:
        fs = [ids[i] for i in order[unit]]
        lines = [f"static int {unit}_tab[16] = {{{', '.join(str(i * 7 + 3) for i in range(16))}}};",
                 f"static int {unit}_state;"]
        for fam in range(prog.families):
            lines.append(f"#define FAM{fam}(name, a, b, c) static {NOINLINE} int name(int x) "
                         f"{{ int t = x * a; {unit}_state += t >> {fam + 1}; "
                         f"return c(t + b) ^ {unit}_tab[(x + {fam}) & 15]; }}")
        # prototypes: the extern ones this unit calls but the other defines too
        for f in prog.funcs.values():
            if f.shape == "fam" and f.unit == unit:
                lines.append(f"static {NOINLINE} int {f.name}(int x);")
            elif f.unit == unit or not (f.static or f.export):
                lines.append(_proto(f) + ";")
        for f in fs:
            if f.shape == "fam":
                callee = ids[f.callees[0]].name
                lines.append(f"FAM{f.consts[0]}({f.name}, {f.consts[1]}, {f.consts[2]}, {callee})")
                continue
            lines.append(f"{_proto(f)}\n{{\n    {_body(f, prog, ids)}\n}}")
        out[unit] = "\n".join(lines) + "\n"
    return out


class Generator:
    def __init__(self, seed: int, size: int = 1):
        self.rng = random.Random(seed)
        self.size = size
        self.funcs: dict[str, Func] = {}
        self.n = 0

    def k(self) -> int:
        return self.rng.randrange(2, 1000)

    def add(self, name: str, unit: str, shape: str, nconst: int, callees=(), **kw) -> str:
        fid = f"f{self.n}"
        self.n += 1
        self.funcs[fid] = Func(name, unit, shape, [self.k() for _ in range(nconst)], list(callees), **kw)
        return fid

    def base(self) -> Program:
        r = self.rng
        leaves = []
        for i in range(8 * self.size):
            unit = UNITS[i % 2]
            shape = r.choice(("arith", "arith", "loop", "glob"))
            leaves.append(self.add(f"leaf{i}", unit, shape, 4, static=r.random() < 0.6))
        # a static of one name in both units, same shape
        for unit in UNITS:
            leaves.append(self.add("helper", unit, "arith", 4))
        mids = []
        for i in range(8 * self.size):
            unit = UNITS[r.randrange(2)]
            same_unit = [x for x in leaves if self.funcs[x].unit == unit or not self.funcs[x].static]
            mids.append(self.add(f"mid{i}", unit, "chain", 4, r.sample(same_unit, 2), static=r.random() < 0.5))
        families = 2
        fams = []
        for i in range(6 * self.size):
            unit = UNITS[i % 2]
            callable_ = [x for x in leaves + mids if self.funcs[x].unit == unit or not self.funcs[x].static]
            fid = self.add(f"fam{i % families}_{i}", unit, "fam", 3, [r.choice(callable_)])
            self.funcs[fid].consts[0] = i % families
            fams.append(fid)
        switches = []
        for i in range(2 * self.size):
            unit = UNITS[i % 2]
            pool = [x for x in leaves + mids + fams if self.funcs[x].unit == unit or not self.funcs[x].static]
            switches.append(self.add(f"disp{i}", unit, "switch", 3, r.sample(pool, min(len(pool), 7))))
        callers = []
        for i in range(4 * self.size):
            unit = UNITS[r.randrange(2)]
            pool = [x for x in leaves + mids + fams if self.funcs[x].unit == unit or not self.funcs[x].static]
            callers.append(self.add(f"call{i}", unit, "caller", 3, r.sample(pool, r.randrange(2, 5)),
                                    static=False))
        # exports reach everything (so nothing is dropped as unreferenced)
        everything = leaves + mids + fams + callers
        for i in range(3):
            unit = UNITS[i % 2]
            pool = [x for x in everything if self.funcs[x].unit == unit or not self.funcs[x].static]
            picks = r.sample(pool, min(len(pool), 5))
            self.add(f"api{i}", unit, "caller", 2, picks, static=False, export=True)
        for i, s in enumerate(switches):
            self.add(f"apis{i}", self.funcs[s].unit, "caller", 1, [], static=False, export=True)
        prog = Program(self.funcs, families)
        # the switch exports: call the dispatcher through a wrapper taking (x): make them callers of it
        for f in prog.funcs.values():
            if f.name.startswith("apis"):
                f.shape = "wrapper_switch"
                f.callees = [switches[int(f.name[4:])]]
        # everything not yet called by anything: an export calls it
        called = {c for f in prog.funcs.values() for c in f.callees}
        for fid, f in list(prog.funcs.items()):
            if not f.export and fid not in called:
                api = next(a for a in prog.funcs.values() if a.export and a.shape == "caller"
                           and (a.unit == f.unit or not f.static))
                api.callees.append(fid)
                called.add(fid)
        return prog


def _copy(prog: Program) -> Program:
    return Program({i: Func(f.name, f.unit, f.shape, list(f.consts), list(f.callees), f.static, f.inline,
                            f.export) for i, f in prog.funcs.items()}, prog.families)


def mutate(base: Program, seed: int) -> tuple[Program, Truth, set[str]]:
    """The intermediate: a changed copy, the truth of which function became which, and the
    ids removed."""
    r = random.Random(seed * 7919 + 1)
    new = _copy(base)
    changed: set[str] = set()
    removed: set[str] = set()
    moved: dict[str, str] = {}
    renamed: dict[str, str] = {}
    inner = [i for i, f in new.funcs.items() if not f.export]
    n = len(inner)
    ids_counter = [max(int(i[1:]) for i in new.funcs) + 1]

    def fresh(f: Func) -> str:
        fid = f"f{ids_counter[0]}"
        ids_counter[0] += 1
        new.funcs[fid] = f
        return fid

    def callers_of(fid: str) -> list[Func]:
        return [f for f in new.funcs.values() if fid in f.callees]

    # changed constants
    for fid in r.sample(inner, n // 6):
        f = new.funcs[fid]
        f.consts[-1] = f.consts[-1] + r.randrange(1, 50)
        changed.add(fid)
    # renamed (static only, so no other unit names it)
    for fid in r.sample([i for i in inner if new.funcs[i].static and new.funcs[i].name != "helper"], 3):
        new.funcs[fid].name += "_r"
        renamed[fid] = new.funcs[fid].name
        for c in callers_of(fid):
            changed.add(next(i for i, f in new.funcs.items() if f is c))
    # removed: callers call a look-alike of the same unit instead
    for fid in r.sample([i for i in inner if new.funcs[i].shape in ("arith", "loop", "glob", "fam")
                         and i not in renamed], 2):
        f = new.funcs[fid]
        alike = [i for i, g in new.funcs.items() if i != fid and i not in removed and g.shape == f.shape
                 and not g.export and (not g.static or (g.unit == f.unit and f.static)) and i not in moved]
        if not alike:
            continue
        repl = r.choice(alike)
        for cid, c in new.funcs.items():
            if fid in c.callees and cid != repl:
                c.callees = [repl if x == fid else x for x in c.callees]
                changed.add(cid)
        if any(fid in c.callees for c in new.funcs.values()):
            continue  # it called itself through the replacement: keep it
        removed.add(fid)
    for fid in removed:
        del new.funcs[fid]
    inner = [i for i in inner if i not in removed]
    # added: a look-alike of an existing function, called by a caller
    for j in range(3):
        proto = new.funcs[r.choice([i for i in inner if new.funcs[i].shape in ("arith", "loop", "chain")])]
        fid = fresh(Func(f"added{j}", proto.unit, proto.shape, [c + 1 for c in proto.consts], list(proto.callees)))
        host = r.choice([i for i, f in new.funcs.items() if f.shape == "caller" and f.unit == proto.unit])
        new.funcs[host].callees.append(fid)
        changed.update((fid, host))
    # wrapper: the old body moves into name_impl, the old name calls it
    for fid in r.sample([i for i in inner if new.funcs[i].shape in ("arith", "loop", "chain", "glob")
                         and i not in renamed], 2):
        f = new.funcs[fid]
        impl = fresh(Func(f.name + "_impl", f.unit, f.shape, list(f.consts), list(f.callees)))
        f.shape, f.callees = "wrapper", [impl]
        moved[fid] = impl
        changed.update((fid, impl))
    # inlining changes: up to two static leaves called from one place are inlined
    once = [i for i in inner if len(callers_of(i)) == 1 and new.funcs[i].shape == "arith"
            and i not in moved and i not in renamed and new.funcs[i].static]
    inlined = set(r.sample(once, min(2, len(once))))
    for fid in inlined:
        new.funcs[fid].inline = True
        for c in callers_of(fid):
            changed.add(next(i for i, f in new.funcs.items() if f is c))
    # call order changes
    for fid in r.sample([i for i, f in new.funcs.items() if f.shape in ("caller", "chain")], 3):
        f = new.funcs[fid]
        r.shuffle(f.callees)
        changed.add(fid)
    same = {base.funcs[i].key(): new.funcs[i].key() for i in base.funcs
            if i in new.funcs and i not in inlined}
    same["support:DllMain"] = "support:DllMain"  # SUPPORT_C is the same in both builds
    truth = Truth(same, {base.funcs[b].key(): new.funcs[i].key() for b, i in moved.items()},
                  {new.funcs[i].name for i in changed if i in new.funcs and not new.funcs[i].inline})
    return new, truth, removed


def base_order(prog: Program) -> dict[str, list[str]]:
    return {u: [i for i, f in prog.funcs.items() if f.unit == u] for u in UNITS}


def shuffled_order(prog: Program, seed: int) -> dict[str, list[str]]:
    r = random.Random(seed * 31 + 5)
    out = base_order(prog)
    for u in UNITS:
        ids = out[u]
        # a few runs of functions move elsewhere, the rest keeps its order
        for _ in range(3):
            if len(ids) < 4:
                break
            a = r.randrange(len(ids) - 2)
            run = ids[a:a + r.randrange(1, 4)]
            del ids[a:a + len(run)]
            b = r.randrange(len(ids) + 1)
            ids[b:b] = run
    return out


def render_with_switch_wrappers(prog: Program, order: dict[str, list[str]]) -> dict[str, str]:
    """render, with the exports of the dispatchers calling them with op = x & 7."""
    saved = {}
    for fid, f in prog.funcs.items():
        if f.shape == "wrapper_switch":
            saved[fid] = f.shape
            f.shape = "caller"
    try:
        srcs = render(prog, order)
    finally:
        for fid, s in saved.items():
            prog.funcs[fid].shape = s
    for fid in saved:
        f = prog.funcs[fid]
        d = prog.funcs[f.callees[0]].name
        unit = f.unit
        srcs[unit] = srcs[unit].replace(f"int r = {d}(x + {f.consts[0]});",
                                        f"int r = {d}(x & 7, x + {f.consts[0]});")
    return srcs


def build(srcs: dict[str, str], d: Path, name: str, marked: set[str] | None) -> None:
    d.mkdir(parents=True, exist_ok=True)
    for u, text in srcs.items():
        (d / f"{u}.c").write_text(text)
    (d / "support.c").write_text(SUPPORT_C)
    marks = []
    if marked is not None:
        (d / "hotpatch_functions.txt").write_text("".join(f"{n}\n" for n in sorted(marked)))
        marks = ["-fms-secure-hotpatch-functions-file=hotpatch_functions.txt"]
    pre = ["setarch", "-R"] if shutil.which("setarch") else []
    objs = []
    for u in (*UNITS, "support"):
        flags = marks if u != "support" else []
        subprocess.run([*pre, CLANG, *CFLAGS, *flags, f"{u}.c", f"/Fo{u}.obj"], cwd=d, check=True,
                       capture_output=True)
        objs.append(f"{u}.obj")
    subprocess.run([LLD, "/nologo", "/dll", "/machine:x64", "/entry:DllMain", "/nodefaultlib", "/noimplib",
                    "/debug", f"/pdb:{name}.pdb", "/pdbaltpath:%_PDB%", "/Brepro", "/functionpadmin:6",
                    "/hotpatchcompatible", f"/out:{name}.dll", *objs], cwd=d, check=True, capture_output=True)


def generate(seed: int, d: Path, size: int = 1) -> Truth:
    """Write and build seed's pair in d (base.dll/.pdb, intermediate.dll/.pdb)."""
    base = Generator(seed, size).base()
    new, truth, _ = mutate(base, seed)
    build(render_with_switch_wrappers(base, base_order(base)), d / "b", "base", None)
    build(render_with_switch_wrappers(new, shuffled_order(new, seed)), d / "n", "intermediate", truth.changed)
    for name, sub in (("base", "b"), ("intermediate", "n")):
        for ext in ("dll", "pdb"):
            shutil.copy(d / sub / f"{name}.{ext}", d / f"{name}.{ext}")
    return truth


@dataclass
class Result:
    seed: int
    pairs: int = 0  # pairs whose both sides the PDBs name
    wrong: list[str] = field(default_factory=list)
    moved: list[str] = field(default_factory=list)
    common: int = 0  # functions in both builds (by the truth and the PDBs)
    found: int = 0  # of them, paired with their counterpart
    seconds: float = 0.0


def procedures(pdb_path: Path) -> dict[int, str]:
    from pehotpatch.image.pdb import load_pdb

    out: dict[int, str] = {}
    for p in load_pdb(pdb_path).procedures:
        if p.rva is not None:
            module = (p.module or "").rsplit("\\", 1)[-1].rsplit("/", 1)[-1]
            out.setdefault(p.rva, f"{module.removesuffix('.obj')}:{p.name}")
    return out


def check(d: Path, truth: Truth, seed: int) -> Result:
    """Pair d's DLLs without PDBs and name every pair through the PDBs."""
    from pehotpatch.api import diff_pair

    res = Result(seed)
    alone = d / "alone"
    alone.mkdir(exist_ok=True)
    for name in ("base.dll", "intermediate.dll"):
        shutil.copy(d / name, alone / name)
    diff = diff_pair(alone / "base.dll", alone / "intermediate.dll", jobs=1)
    assert diff.base.pdb is None and diff.new.pdb is None
    bn, nn = procedures(d / "base.pdb"), procedures(d / "intermediate.pdb")
    paired: dict[str, str] = {}
    for p in diff.correlation.functions:
        b, n = bn.get(p.base.rva), nn.get(p.new.rva)
        if b is None or n is None:
            continue
        res.pairs += 1
        paired[b] = n
        if truth.same.get(b) == n:
            continue
        what = f"seed {seed}: {b} paired with {n} by {p.method}"
        (res.moved if truth.moved.get(b) == n else res.wrong).append(what)
    present = set(nn.values())
    for b in bn.values():
        n = truth.same.get(b)
        if n is not None and n in present:
            res.common += 1
            res.found += paired.get(b) == n
    return res


def run_seed(seed: int, root: Path, size: int = 1) -> Result:
    t = time.monotonic()
    d = root / f"seed{seed}"
    truth = generate(seed, d, size)
    res = check(d, truth, seed)
    res.seconds = time.monotonic() - t
    return res


def _seeds(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        a, _, b = part.partition("-")
        out.extend(range(int(a), int(b or a) + 1))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="0-9", help="e.g. 0-49 or 1,5,9")
    ap.add_argument("--size", type=int, default=1, help="scale of each program (functions per kind)")
    ap.add_argument("--keep", type=Path, help="build in this directory and keep it")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    root = args.keep or Path(tempfile.mkdtemp(prefix="pairgen-"))
    totals = Result(-1)
    try:
        for seed in _seeds(args.seeds):
            res = run_seed(seed, root, args.size)
            for w in res.wrong:
                print("WRONG", w)
            for w in res.moved:
                print("moved", w)
            print(f"seed {seed}: {res.pairs} pairs named, {len(res.wrong)} wrong, {len(res.moved)} moved, "
                  f"{res.found}/{res.common} common functions paired ({res.seconds:.1f} s)", flush=True)
            totals.pairs += res.pairs
            totals.wrong += res.wrong
            totals.moved += res.moved
            totals.common += res.common
            totals.found += res.found
            totals.seconds += res.seconds
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    print(f"total: {totals.pairs} pairs named, {len(totals.wrong)} wrong, {len(totals.moved)} moved, "
          f"{totals.found}/{totals.common} common functions paired ({totals.seconds:.1f} s)")
    return 1 if totals.wrong else 0


if __name__ == "__main__":
    sys.exit(main())
