"""Synthetic C projects for benchmarking: N functions, K struct types, base + intermediate.

    .venv/bin/python bench/gen_synthetic.py --functions 10000          # build (or reuse) one pair
    .venv/bin/python bench/gen_synthetic.py --functions 1000 --print-source | less

Everything is deterministic from ``--seed``.  The program is a realistic mix of small
leaf functions, floating point, struct readers and writers, functions touching globals
(counters, struct instances, arrays, read-only tables), loops, switch statements (jump
tables), list walks, byte-buffer state machines and callers (within and across
translation units, some through ``static inline`` helpers that get inlined).  About one
function in twenty is exported.

The intermediate differs from the base in a handful of functions (``--changes``): each
gets an early bounds/NULL check, the typical shape of a security fix.  Those functions
are also listed in ``hotpatch.txt`` and their translation units are compiled with
``-fms-secure-hotpatch-functions-file`` (under ``setarch -R``: clang's pass is not
deterministic under ASLR).

Build: clang-cl-22 per translation unit (2 parallel jobs), lld-link-22 into ``synth.dll``
and ``synth.pdb``.  Objects are position independent (``-ffile-compilation-dir=.``) and
cached by content under ``.cache/bench/obj/``, so the intermediate only recompiles the
translation units that changed and reruns are fast.  Each pair lives in
``.cache/bench/synth-<params>-<hash>/{base,new}/`` with a ``build.json`` recording the
build times.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "bench"
GEN_VERSION = 3  # bump when the generated program changes shape

CLANG = "clang-cl-22"
LLD = "lld-link-22"
CFLAGS = [
    "--target=x86_64-pc-windows-msvc", "/nologo", "/c", "/O2", "/Z7", "/GS-", "/Zl", "/Gy",
    "/hotpatch", "-ffile-compilation-dir=.",
]
LDFLAGS = [
    "/nologo", "/dll", "/machine:x64", "/noentry", "/nodefaultlib", "/debug", "/pdb:synth.pdb",
    "/pdbaltpath:%_PDB%", "/Brepro", "/functionpadmin:6",
    # module paths in the PDB are made absolute against this (not the build directory), so
    # base and intermediate name their modules alike, as two builds in one tree would
    "/pdbsourcepath:C:\\synth",
]


# ----------------------------------------------------------------------------- model
@dataclass
class StructDef:
    index: int
    name: str
    text: str
    ints: list[str]  # integer scalar fields (readable and writable)
    doubles: list[str]
    arrays: list[tuple[str, int]]  # int arrays: name, length
    ptrs: list[tuple[str, int]]  # pointer fields: name, target struct index
    is_union: bool = False


@dataclass
class GlobalDef:
    index: int
    name: str
    kind: str  # counter, wide, obj, arr, tab, ptr, dbl
    struct: int = -1
    length: int = 0
    tu: int = 0

    def decl(self, structs: list[StructDef]) -> str:
        k = self.kind
        if k == "counter":
            return f"int {self.name}"
        if k == "wide":
            return f"long long {self.name}"
        if k == "dbl":
            return f"double {self.name}"
        if k == "obj":
            return f"{structs[self.struct].name} {self.name}"
        if k == "ptr":
            return f"{structs[self.struct].name} *{self.name}"
        if k == "arr":
            return f"int {self.name}[{self.length}]"
        if k == "tab":
            return f"const int {self.name}[{self.length}]"
        raise AssertionError(k)


@dataclass
class FuncSpec:
    index: int
    name: str
    kind: str
    ret: str
    params: list[tuple[str, str]]  # (type, name)
    exported: bool
    tu: int
    struct: int = -1  # struct the function works on, if any

    def prototype(self) -> str:
        args = ", ".join(f"{t}{n}" if t.endswith("*") else f"{t} {n}" for t, n in self.params) or "void"
        attr = "__declspec(dllexport) " if self.exported else ""
        return f"{attr}{self.ret} {self.name}({args})"


KIND_WEIGHTS = [
    ("leaf", 20), ("leaf_fp", 5), ("struct_get", 12), ("struct_set", 8), ("global", 12),
    ("loop", 10), ("switch", 10), ("caller", 16), ("state", 3), ("walk", 4),
]

FIELD_WORDS = ["count", "flags", "size", "len", "mode", "state", "refs", "kind", "id", "pos",
               "cap", "hash", "seq", "mask", "prio", "owner", "limit", "gen", "err", "tag"]


def _rng(seed: int, *parts: object) -> random.Random:
    return random.Random(":".join(str(p) for p in (seed, *parts)))


@dataclass
class Program:
    seed: int
    n_funcs: int
    n_structs: int
    per_tu: int
    structs: list[StructDef] = field(default_factory=list)
    globals_: list[GlobalDef] = field(default_factory=list)
    funcs: list[FuncSpec] = field(default_factory=list)
    n_tus: int = 0

    # ------------------------------------------------------------------ layout
    def plan(self) -> None:
        self.n_tus = max(1, -(-self.n_funcs // self.per_tu))
        self._plan_structs()
        self._plan_globals()
        self._plan_funcs()

    def _plan_structs(self) -> None:
        K = self.n_structs
        for k in range(K):
            r = _rng(self.seed, "struct", k)
            is_union = k > 8 and r.random() < 0.04
            name = f"{'union' if is_union else 'struct'} {'U' if is_union else 'S'}{k}"
            lines: list[str] = []
            ints: list[str] = []
            doubles: list[str] = []
            arrays: list[tuple[str, int]] = []
            ptrs: list[tuple[str, int]] = []
            lines.append("    int id;")
            ints.append("id")
            nf = r.randint(2, 7) if is_union else r.randint(3, 16)
            bitfields = 0
            for j in range(nf):
                word = r.choice(FIELD_WORDS)
                fname = f"{word}{j}"
                c = r.random()
                if c < 0.38:
                    t = r.choice(["int", "unsigned int", "short", "unsigned char", "long long",
                                  "unsigned short", "int"])
                    lines.append(f"    {t} {fname};")
                    ints.append(fname)
                elif c < 0.46:
                    t = r.choice(["double", "float"])
                    lines.append(f"    {t} {fname};")
                    doubles.append(fname)
                elif c < 0.56 and not is_union:
                    n = r.choice([4, 8, 16, 32])
                    lines.append(f"    int {fname}[{n}];")
                    arrays.append((fname, n))
                elif c < 0.62:
                    n = r.choice([8, 16, 24, 64])
                    lines.append(f"    char {fname}_name[{n}];")
                elif c < 0.80 and not is_union:
                    tgt = r.randrange(K) if r.random() < 0.7 else k
                    lines.append(f"    struct S{tgt} *{fname}_p;")
                    if not _is_union(self.seed, tgt):
                        ptrs.append((f"{fname}_p", tgt))
                elif c < 0.88 and k > 0 and not is_union:
                    tgt = r.randrange(max(0, k - 40), k)
                    if _is_union(self.seed, tgt):
                        lines.append(f"    union U{tgt} {fname}_u;")
                    else:
                        lines.append(f"    struct S{tgt} {fname}_s;")
                elif c < 0.94 and not is_union and bitfields < 6:
                    bitfields += 1
                    lines.append(f"    unsigned int {fname}_bits : {r.randint(1, 7)};")
                else:
                    lines.append(f"    void *{fname}_ctx;")
            text = f"{name} {{\n" + "\n".join(lines) + "\n};\n"
            self.structs.append(StructDef(k, name, text, ints, doubles, arrays, ptrs, is_union))

    def _plan_globals(self) -> None:
        G = max(64, self.n_funcs // 8)
        r = _rng(self.seed, "globals")
        kinds = [("counter", 30), ("wide", 8), ("dbl", 5), ("obj", 20), ("arr", 12), ("tab", 15),
                 ("ptr", 10)]
        names, weights = zip(*kinds, strict=True)
        plain = [s.index for s in self.structs if not s.is_union]
        for g in range(G):
            kind = r.choices(names, weights)[0]
            gd = GlobalDef(g, f"g_{kind}{g}", kind, tu=g % self.n_tus)
            if kind in ("obj", "ptr"):
                gd.struct = r.choice(plain)
            if kind in ("arr", "tab"):
                gd.length = r.choice([16, 32, 64, 256])
            self.globals_.append(gd)
        self._by_kind: dict[str, list[int]] = {}
        for gd in self.globals_:
            self._by_kind.setdefault(gd.kind, []).append(gd.index)

    def _plan_funcs(self) -> None:
        names, weights = zip(*KIND_WEIGHTS, strict=True)
        plain = [s.index for s in self.structs if not s.is_union]
        for i in range(self.n_funcs):
            r = _rng(self.seed, "spec", i)
            kind = r.choices(names, weights)[0]
            tu = i // self.per_tu
            exported = r.random() < 0.05
            st = -1
            if kind == "leaf":
                if r.random() < 0.6:
                    ret, params = "int", [("int", "a"), ("int", "b")]
                else:
                    ret, params = "unsigned int", [("unsigned int", "a")]
            elif kind == "leaf_fp":
                ret, params = "double", [("double", "x"), ("double", "y")]
            elif kind == "struct_get":
                st = r.choice(plain)
                ret, params = "long long", [(f"const {self.structs[st].name} *", "p")]
            elif kind == "struct_set":
                st = r.choice(plain)
                ret, params = "void", [(f"{self.structs[st].name} *", "p"), ("int", "v")]
            elif kind == "global":
                ret, params = "int", [("int", "v")]
            elif kind == "loop":
                c = r.random()
                if c < 0.4:
                    ret, params = "long long", [("const int *", "a"), ("int", "n")]
                elif c < 0.7:
                    st = r.choice(plain)
                    ret, params = "long long", [(f"const {self.structs[st].name} *", "p"), ("int", "n")]
                else:
                    ret, params = "unsigned int", [("const unsigned char *", "s"), ("unsigned int", "n")]
            elif kind == "switch":
                ret, params = "int", [("int", "x")]
            elif kind == "caller":
                ret, params = "int", [("int", "x"), ("void *", "ctx")]
            elif kind == "state":
                ret, params = "int", [("const unsigned char *", "buf"), ("int", "n")]
            elif kind == "walk":
                cands = [s for s in plain if self.structs[s].ptrs]
                st = r.choice(cands) if cands else r.choice(plain)
                ret, params = "int", [(f"{self.structs[st].name} *", "p")]
            else:
                raise AssertionError(kind)
            self.funcs.append(FuncSpec(i, f"{kind}_{i}", kind, ret, params, exported, tu, st))

    # ------------------------------------------------------------------ emission
    def header(self) -> str:
        out = ["/* generated by bench/gen_synthetic.py: do not edit */",
               "#ifndef SYNTH_H", "#define SYNTH_H", ""]
        for s in self.structs:
            out.append(f"{s.name};")
        out.append("")
        for s in self.structs:
            out.append(s.text)
        out.append("#endif")
        return "\n".join(out) + "\n"

    def runtime_tu(self) -> str:
        """What a CRT-free DLL must define itself: clang may call these."""
        return """/* generated: runtime support for a CRT-free DLL */
typedef unsigned long long size_t;
int _fltused = 0x9875;
void *memset(void *d, int c, size_t n) {
    volatile unsigned char *p = (volatile unsigned char *)d;
    while (n--) *p++ = (unsigned char)c;
    return d;
}
void *memcpy(void *d, const void *s, size_t n) {
    volatile unsigned char *p = (volatile unsigned char *)d;
    const volatile unsigned char *q = (const volatile unsigned char *)s;
    while (n--) *p++ = *q++;
    return d;
}
void *memmove(void *d, const void *s, size_t n) {
    volatile unsigned char *p = (volatile unsigned char *)d;
    const volatile unsigned char *q = (const volatile unsigned char *)s;
    if (p < q) { while (n--) *p++ = *q++; }
    else { p += n; q += n; while (n--) *--p = *--q; }
    return d;
}
int memcmp(const void *a, const void *b, size_t n) {
    const volatile unsigned char *p = (const volatile unsigned char *)a;
    const volatile unsigned char *q = (const volatile unsigned char *)b;
    for (; n; n--, p++, q++) if (*p != *q) return *p - *q;
    return 0;
}
"""

    def tu_source(self, t: int, changed: set[int]) -> str:
        lo, hi = t * self.per_tu, min(self.n_funcs, (t + 1) * self.per_tu)
        bodies: list[str] = []
        used_globals: set[int] = set()
        callees: set[int] = set()
        for i in range(lo, hi):
            em = _Emitter(self, self.funcs[i], i in changed)
            bodies.append(em.emit())
            used_globals |= em.globals_used
            callees |= em.callees
        out = ["/* generated by bench/gen_synthetic.py: do not edit */", '#include "synth.h"', ""]
        # globals defined here
        for gd in self.globals_:
            if gd.tu == t:
                out.append(self._global_definition(gd))
        out.append("")
        for g in sorted(used_globals):
            gd = self.globals_[g]
            if gd.tu != t:
                out.append(f"extern {gd.decl(self.structs)};")
        for c in sorted(callees):
            out.append(self.funcs[c].prototype() + ";")
        out.append("")
        out.extend(bodies)
        return "\n".join(out) + "\n"

    def _global_definition(self, gd: GlobalDef) -> str:
        if gd.kind == "tab":
            r = _rng(self.seed, "tab", gd.index)
            vals = ", ".join(str(r.randrange(-1000, 100000)) for _ in range(gd.length))
            return f"{gd.decl(self.structs)} = {{{vals}}};"
        if gd.kind in ("counter", "wide"):
            return f"{gd.decl(self.structs)} = {gd.index * 7 % 1000};"
        if gd.kind == "dbl":
            return f"{gd.decl(self.structs)} = {gd.index}.25;"
        return f"{gd.decl(self.structs)};"

    def pick_global(self, r: random.Random, kind: str) -> GlobalDef:
        ids = self._by_kind.get(kind)
        if not ids:
            ids = self._by_kind["counter"]
        return self.globals_[r.choice(ids)]


def _is_union(seed: int, k: int) -> bool:
    r = _rng(seed, "struct", k)
    return k > 8 and r.random() < 0.04


class _Emitter:
    """The body of one function (deterministic from the seed and the function index)."""

    def __init__(self, prog: Program, spec: FuncSpec, changed: bool):
        self.p = prog
        self.f = spec
        self.changed = changed
        self.r = _rng(prog.seed, "body", spec.index)
        self.globals_used: set[int] = set()
        self.callees: set[int] = set()
        self.helpers: list[str] = []

    def g(self, kind: str) -> GlobalDef:
        gd = self.p.pick_global(self.r, kind)
        self.globals_used.add(gd.index)
        return gd

    def k(self, lo: int = 1, hi: int = 9999) -> int:
        return self.r.randint(lo, hi)

    def guard(self) -> str:
        """The fix: an early bounds or NULL check on the first parameter."""
        t, n = self.f.params[0]
        ret = "" if self.f.ret == "void" else " 0"
        if "*" in t:
            cond = f"!{n}"
        elif t == "double":
            cond = f"{n} != {n} || {n} > 1e300"
        elif t.startswith("unsigned"):
            cond = f"{n} > {self.k(1000, 1 << 20)}u"
        else:
            cond = f"{n} < 0 || {n} > {self.k(1000, 1 << 20)}"
        return f"    if ({cond})\n        return{ret};\n"

    def emit(self) -> str:
        body = getattr(self, "_" + self.f.kind)()
        if self.changed:
            body = self.guard() + body
        return "".join(self.helpers) + f"{self.f.prototype()}\n{{\n{body}}}\n"

    # -- kinds --
    def _leaf(self) -> str:
        r = self.r
        if self.f.ret == "int":
            ops = [f"a * {self.k(2, 97)}", f"(b >> {self.k(1, 7)})", f"(a ^ {self.k()})",
                   f"(b & {self.k(1, 255)})", "(a - b)", f"(a | {self.k(1, 63)})"]
            r.shuffle(ops)
            expr = " + ".join(ops[: r.randint(2, 5)])
            if r.random() < 0.4:
                return f"    if (a > b)\n        return {expr};\n    return b - a + {self.k()};\n"
            return f"    return {expr};\n"
        c = r.random()
        if c < 0.5:
            return (f"    a ^= a >> {self.k(3, 17)};\n    a *= {self.k(0x10001, 0x7fffffff)}u;\n"
                    f"    a ^= a >> {self.k(3, 17)};\n    return a;\n")
        return f"    return (a << {self.k(1, 9)}) | (a >> {self.k(10, 31)});\n"

    def _leaf_fp(self) -> str:
        r = self.r
        a, b = r.uniform(0.1, 9.9), r.uniform(0.1, 9.9)
        if r.random() < 0.5:
            return f"    return x * {a:.6f} + y / {b:.6f};\n"
        return (f"    double t = x - y;\n    if (t < 0)\n        t = -t;\n"
                f"    return t * {a:.6f} + (x > y ? x : y) * {b:.6f};\n")

    def _struct_get(self) -> str:
        s = self.p.structs[self.f.struct]
        r = self.r
        parts = [f"(long long)p->{f}" for f in r.sample(s.ints, min(len(s.ints), r.randint(1, 4)))]
        if s.doubles and r.random() < 0.3:
            parts.append(f"(long long)(p->{r.choice(s.doubles)} * {self.k(2, 50)})")
        if s.arrays and r.random() < 0.5:
            name, n = r.choice(s.arrays)
            parts.append(f"p->{name}[{self.k(0, n - 1)}]")
        body = f"    long long r = {' + '.join(parts)};\n"
        if s.ptrs and r.random() < 0.5:
            name, tgt = r.choice(s.ptrs)
            ts = self.p.structs[tgt]
            fld = r.choice(ts.ints)
            body += f"    if (p->{name})\n        r += p->{name}->{fld};\n"
        return body + "    return r;\n"

    def _struct_set(self) -> str:
        s = self.p.structs[self.f.struct]
        r = self.r
        out = []
        for f in r.sample(s.ints, min(len(s.ints), r.randint(1, 4))):
            op = r.choice(["=", "+=", "^=", "|="])
            out.append(f"    p->{f} {op} v{'' if op == '=' else f' + {self.k(1, 99)}'};\n")
        if s.arrays and r.random() < 0.5:
            name, n = r.choice(s.arrays)
            out.append(f"    p->{name}[v & {n - 1}] = v;\n")
        if r.random() < 0.3:
            gd = self.g("counter")
            out.append(f"    {gd.name}++;\n")
        return "".join(out)

    def _global(self) -> str:
        r = self.r
        out = []
        c = self.g("counter")
        out.append(f"    {c.name} += v;\n")
        if r.random() < 0.6:
            o = self.g("obj")
            s = self.p.structs[o.struct]
            out.append(f"    {o.name}.{r.choice(s.ints)} = v;\n")
        if r.random() < 0.4:
            w = self.g("wide")
            out.append(f"    {w.name} += (long long)v * {self.k(3, 999)};\n")
        if r.random() < 0.5:
            a = self.g("arr")
            out.append(f"    {a.name}[v & {a.length - 1}]++;\n")
        if r.random() < 0.3:
            pg = self.g("ptr")
            s = self.p.structs[pg.struct]
            out.append(f"    if ({pg.name})\n        {pg.name}->{r.choice(s.ints)} = v;\n")
        t = self.g("tab")
        out.append(f"    return {t.name}[v & {t.length - 1}] + {c.name};\n")
        return "".join(out)

    def _loop(self) -> str:
        r = self.r
        t0, n0 = self.f.params[0]
        if t0 == "const int *":
            if r.random() < 0.5:
                return (f"    long long s = 0;\n    for (int i = 0; i < n; i++)\n"
                        f"        s += (long long)a[i] * {self.k(2, 999)};\n    return s;\n")
            return (f"    long long best = a[0];\n    for (int i = 1; i < n; i++) {{\n"
                    f"        if (a[i] > best)\n            best = a[i];\n"
                    f"        else if (a[i] < -{self.k()})\n            break;\n    }}\n"
                    f"    return best;\n")
        if t0 == "const unsigned char *":
            return (f"    unsigned int h = {self.k(1, 1 << 30)}u;\n"
                    f"    for (unsigned int i = 0; i < n; i++) {{\n"
                    f"        h ^= s[i];\n        h *= {self.k(0x1000193, 0x7fffffff)}u;\n    }}\n"
                    f"    return h;\n")
        s = self.p.structs[self.f.struct]
        fld = r.choice(s.ints)
        fld2 = r.choice(s.ints)
        return (f"    long long acc = 0;\n    for (int i = 0; i < n; i++) {{\n"
                f"        if (p[i].{fld} > {self.k(0, 100)})\n            acc += p[i].{fld2};\n"
                f"        else\n            acc -= {self.k(1, 9)};\n    }}\n    return acc;\n")

    def _switch(self) -> str:
        r = self.r
        n = r.randint(5, 24)
        dense = r.random() < 0.7
        base = self.k(0, 50)
        cases = list(range(base, base + n)) if dense else sorted(r.sample(range(0, 5000), n))
        out = ["    switch (x) {\n"]
        for c in cases:
            v = r.random()
            if v < 0.5:
                out.append(f"    case {c}:\n        return {self.k()};\n")
            elif v < 0.75:
                out.append(f"    case {c}:\n        return x * {self.k(2, 99)} + {self.k()};\n")
            else:
                gd = self.g("counter")
                out.append(f"    case {c}:\n        {gd.name} += {self.k(1, 9)};\n        break;\n")
        out.append(f"    default:\n        return -{self.k(1, 99)};\n    }}\n    return x + {self.k(1, 99)};\n")
        return "".join(out)

    def _callee(self) -> FuncSpec:
        r = self.r
        i = self.f.index
        if r.random() < 0.5:  # same translation unit
            lo, hi = self.f.tu * self.p.per_tu, min(self.p.n_funcs, (self.f.tu + 1) * self.p.per_tu)
        else:
            lo, hi = 0, self.p.n_funcs
        j = r.randrange(lo, hi)
        if j == i:
            j = (j + 1) % self.p.n_funcs
        self.callees.add(j)
        return self.p.funcs[j]

    def _args(self, callee: FuncSpec) -> str:
        out = []
        for t, _ in callee.params:
            if t == "int":
                out.append(f"x + {self.k(0, 99)}")
            elif t == "unsigned int":
                out.append(f"(unsigned int)x ^ {self.k(0, 99)}u")
            elif t == "double":
                out.append(f"(double)x * {self.r.uniform(0.1, 2):.3f}")
            else:
                out.append(f"({t})ctx")
        if callee.params and callee.params[-1][1] == "n":
            out[-1] = "x & 63" if callee.params[-1][0] == "int" else "(unsigned int)x & 63u"
        return ", ".join(out)

    def _caller(self) -> str:
        r = self.r
        out = ["    int r = 0;\n"]
        if r.random() < 0.3:
            hname = f"helper_{self.f.index}"
            self.helpers.append(
                f"static inline int {hname}(int v)\n{{\n    return (v * {self.k(3, 99)}) ^ (v >> {self.k(1, 9)});\n}}\n"
            )
            out.append(f"    r += {hname}(x);\n")
        for _ in range(r.randint(1, 5)):
            c = self._callee()
            call = f"{c.name}({self._args(c)})"
            if c.ret == "void":
                out.append(f"    {call};\n")
            elif c.ret == "double":
                out.append(f"    r += (int){call};\n")
            else:
                out.append(f"    r += (int){call};\n")
        if r.random() < 0.5:
            out.append("    if (r < 0)\n        r = -r;\n")
        out.append("    return r;\n")
        return "".join(out)

    def _state(self) -> str:
        r = self.r
        c = self.g("counter")
        t = self.g("tab")
        n_states = r.randint(3, 7)
        out = ["    int state = 0, acc = 0;\n", "    for (int i = 0; i < n; i++) {\n",
               "        unsigned char ch = buf[i];\n", "        switch (state) {\n"]
        for s in range(n_states):
            nxt = (s + 1) % n_states
            out.append(f"        case {s}:\n")
            out.append(f"            if (ch == {self.k(0, 255)}) {{\n                state = {nxt};\n"
                       f"                acc += {t.name}[ch & {t.length - 1}];\n            }} else if (ch > {self.k(100, 250)}) {{\n"
                       f"                {c.name}++;\n                return -{s + 1};\n            }}\n"
                       f"            break;\n")
        out.append("        default:\n            state = 0;\n        }\n    }\n")
        out.append(f"    return acc + state * {self.k(2, 99)};\n")
        return "".join(out)

    def _walk(self) -> str:
        r = self.r
        s = self.p.structs[self.f.struct]
        if not s.ptrs:
            return "    return p->id;\n"
        name, tgt = r.choice(s.ptrs)
        ts = self.p.structs[tgt]
        out = [f"    int total = p->{r.choice(s.ints)};\n"]
        if tgt == s.index:
            out.append(f"    for (int hops = 0; p && hops < {self.k(4, 64)}; hops++) {{\n"
                       f"        total += p->{r.choice(s.ints)};\n        p = p->{name};\n    }}\n")
        else:
            out.append(f"    {ts.name} *q = p->{name};\n    if (q) {{\n"
                       f"        total += q->{r.choice(ts.ints)};\n")
            if ts.ptrs:
                n2, t2 = r.choice(ts.ptrs)
                out.append(f"        if (q->{n2})\n            total ^= q->{n2}->{r.choice(self.p.structs[t2].ints)};\n")
            out.append("    }\n")
        out.append("    return total;\n")
        return "".join(out)


# ----------------------------------------------------------------------------- build
def default_structs(n_funcs: int) -> int:
    return min(1200, 200 + n_funcs // 200)


def choose_changes(prog: Program, n_changes: int) -> list[int]:
    """A handful of functions of different kinds, spread over the program."""
    r = _rng(prog.seed, "changes")
    by_kind: dict[str, list[int]] = {}
    for f in prog.funcs:
        by_kind.setdefault(f.kind, []).append(f.index)
    kinds = sorted(by_kind)
    r.shuffle(kinds)
    picked: list[int] = []
    while len(picked) < min(n_changes, prog.n_funcs):
        for k in kinds:
            if len(picked) >= n_changes:
                break
            cand = r.choice(by_kind[k])
            if cand not in picked:
                picked.append(cand)
    return sorted(picked)


def _sha(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode() if isinstance(p, str) else p)
        h.update(b"\0")
    return h.hexdigest()


def _tool_version(tool: str) -> str:
    try:
        out = subprocess.run([tool, "--version"], capture_output=True, text=True, check=False).stdout
    except FileNotFoundError as exc:
        raise SystemExit(f"{tool} not found: run `make toolchain`") from exc
    return out.splitlines()[0] if out else tool


@dataclass
class Built:
    dir: Path
    dll: Path
    pdb: Path
    info: dict


def _write_if_changed(path: Path, text: str) -> None:
    if path.is_file() and path.read_text() == text:
        return
    path.write_text(text)


def _compile_one(src_dir: Path, tu: str, extra: list[str], obj_cache: Path, clang_id: str) -> tuple[str, bool, float]:
    """Compile ``tu`` (a .c name in src_dir) unless an identical object is cached.

    Returns (cache key, compiled?, seconds)."""
    text = (src_dir / tu).read_bytes()
    header = (src_dir / "synth.h").read_bytes()
    key = _sha(clang_id, " ".join(CFLAGS + extra), tu, text, header,
               (src_dir / "hotpatch.txt").read_bytes() if extra else b"")
    cached = obj_cache / f"{key}.obj"
    if cached.is_file():
        return key, False, 0.0
    obj = tu[:-2] + ".obj"
    cmd = [CLANG, *CFLAGS, *extra, f"/Fo{obj}", tu]
    if extra and shutil.which("setarch"):
        cmd = ["setarch", "-R", *cmd]  # clang's secure hot-patch pass is not deterministic under ASLR
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=src_dir, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if res.returncode != 0:
        raise RuntimeError(f"compiling {src_dir / tu} failed:\n{res.stderr[-4000:]}")
    tmp = obj_cache / f"{key}.obj.{os.getpid()}.tmp"
    shutil.move(str(src_dir / obj), tmp)
    os.replace(tmp, cached)
    return key, True, dt


def variant_sources(prog: Program, changed: set[int]) -> tuple[dict[str, str], list[tuple[str, list[str]]]]:
    """The files of one variant (name -> text) and the translation units with their extra flags."""
    files = {"synth.h": prog.header(), "rt.c": prog.runtime_tu(),
             "hotpatch.txt": "".join(n + "\n" for n in sorted(prog.funcs[i].name for i in changed))}
    tus: list[tuple[str, list[str]]] = [("rt.c", [])]
    changed_tus = {prog.funcs[i].tu for i in changed}
    for t in range(prog.n_tus):
        name = f"tu{t:04d}.c"
        files[name] = prog.tu_source(t, changed)
        tus.append((name, ["-fms-secure-hotpatch-functions-file=hotpatch.txt"] if t in changed_tus else []))
    return files, tus


def build_variant(prog: Program, out: Path, changed: set[int], jobs: int = 2, log=print,
                  sources: tuple[dict[str, str], list[tuple[str, list[str]]], float] | None = None) -> Built:
    src = out / "src"
    objdir = out / "obj"
    src.mkdir(parents=True, exist_ok=True)
    objdir.mkdir(parents=True, exist_ok=True)
    obj_cache = CACHE / "obj"
    obj_cache.mkdir(parents=True, exist_ok=True)
    clang_id = _tool_version(CLANG)

    if sources is None:
        t_gen = time.perf_counter()
        files, tus = variant_sources(prog, changed)
        gen_s = time.perf_counter() - t_gen
    else:
        files, tus, gen_s = sources
    for name, text in files.items():
        _write_if_changed(src / name, text)
    hp_names = sorted(prog.funcs[i].name for i in changed)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=jobs) as ex:
        results = list(ex.map(lambda a: _compile_one(src, a[0], a[1], obj_cache, clang_id), tus))
    compile_wall = time.perf_counter() - t0
    compiled = sum(1 for _, c, _ in results if c)
    objs = []
    for (name, _), (key, _, _) in zip(tus, results, strict=True):
        dst = objdir / (name[:-2] + ".obj")
        if dst.exists():
            dst.unlink()
        try:
            os.link(obj_cache / f"{key}.obj", dst)
        except OSError:
            shutil.copyfile(obj_cache / f"{key}.obj", dst)
        objs.append(f"obj/{dst.name}")

    t1 = time.perf_counter()
    rsp = out / "link.rsp"
    rsp.write_text("\n".join([*LDFLAGS, "/out:synth.dll", *objs]) + "\n")
    res = subprocess.run([LLD, "@link.rsp"], cwd=out, capture_output=True, text=True)
    link_s = time.perf_counter() - t1
    if res.returncode != 0:
        raise RuntimeError(f"linking {out} failed:\n{res.stderr[-4000:]}")
    info = {
        "functions": prog.n_funcs, "structs": prog.n_structs, "globals": len(prog.globals_),
        "translation_units": prog.n_tus, "seed": prog.seed,
        "changed_functions": hp_names,
        "generate_seconds": round(gen_s, 3),
        "compile_wall_seconds": round(compile_wall, 3),
        "compile_tu_seconds_sum": round(sum(d for _, _, d in results), 3),
        "tus_compiled": compiled, "tus_from_cache": len(tus) - compiled, "compile_jobs": jobs,
        "link_seconds": round(link_s, 3),
        "dll_bytes": (out / "synth.dll").stat().st_size,
        "pdb_bytes": (out / "synth.pdb").stat().st_size,
        "source_bytes": sum((src / n).stat().st_size for n, _ in tus),
        "clang": clang_id, "lld": _tool_version(LLD),
    }
    (out / "build.json").write_text(json.dumps(info, indent=2) + "\n")
    with open(CACHE / "build-log.jsonl", "a") as f:  # build times survive later relinks
        f.write(json.dumps({"dir": str(out), "time": time.strftime("%Y-%m-%dT%H:%M:%S"), **info}) + "\n")
    log(f"  built {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}: {compiled}/{len(tus)} TUs compiled "
        f"in {compile_wall:.1f}s, link {link_s:.1f}s, pdb {info['pdb_bytes'] / 1e6:.1f} MB")
    return Built(out, out / "synth.dll", out / "synth.pdb", info)


def pair_dir(n_funcs: int, n_structs: int, seed: int, n_changes: int, per_tu: int) -> Path:
    return CACHE / f"synth-n{n_funcs}-k{n_structs}-s{seed}-c{n_changes}-t{per_tu}"


def build_pair(n_funcs: int, n_structs: int | None = None, seed: int = 1, n_changes: int = 5,
               per_tu: int = 1000, jobs: int = 2, force: bool = False, log=print) -> dict:
    """Build (or reuse) the base and intermediate of one synthetic program.

    Returns ``{"dir", "cached", "base": Built, "new": Built, "functions_file"}``.  The
    sources are always generated (a second or two at 100k functions); a finished pair
    whose ``done.json`` records the same digest of sources, flags and tool versions is
    reused as is."""
    if n_structs is None:
        n_structs = default_structs(n_funcs)
    d = pair_dir(n_funcs, n_structs, seed, n_changes, per_tu)
    prog = Program(seed, n_funcs, n_structs, per_tu)
    prog.plan()
    changes = set(choose_changes(prog, n_changes))
    t0 = time.perf_counter()
    base_src = variant_sources(prog, set())
    t1 = time.perf_counter()
    new_src = variant_sources(prog, changes)
    t2 = time.perf_counter()
    h = hashlib.sha256()
    for part in (str(GEN_VERSION), " ".join(CFLAGS), " ".join(LDFLAGS), _tool_version(CLANG), _tool_version(LLD)):
        h.update(part.encode() + b"\0")
    for files, tus in (base_src, new_src):
        for name in sorted(files):
            h.update(name.encode() + b"\0" + files[name].encode() + b"\0")
        h.update(repr(tus).encode())
    digest = h.hexdigest()
    done = d / "done.json"
    if done.is_file() and not force:
        try:
            ok = json.loads(done.read_text()).get("digest") == digest
        except ValueError:
            ok = False
        if ok:
            base_info = json.loads((d / "base" / "build.json").read_text())
            new_info = json.loads((d / "new" / "build.json").read_text())
            return {
                "dir": d, "cached": True,
                "base": Built(d / "base", d / "base" / "synth.dll", d / "base" / "synth.pdb", base_info),
                "new": Built(d / "new", d / "new" / "synth.dll", d / "new" / "synth.pdb", new_info),
                "functions_file": d / "new" / "src" / "hotpatch.txt",
            }
        done.unlink()
    log(f"building synthetic pair: {n_funcs} functions, {n_structs} structs, seed {seed} -> {d.name}")
    base = build_variant(prog, d / "base", set(), jobs, log, (*base_src, t1 - t0))
    new = build_variant(prog, d / "new", changes, jobs, log, (*new_src, t2 - t1))
    done.write_text(json.dumps({"digest": digest, "base": base.info, "new": new.info}, indent=2) + "\n")
    return {"dir": d, "cached": False, "base": base, "new": new, "functions_file": d / "new" / "src" / "hotpatch.txt"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--functions", "-n", type=int, default=1000)
    ap.add_argument("--structs", "-k", type=int, default=None, help="default: 200 + N/200, at most 1200")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--changes", type=int, default=5)
    ap.add_argument("--per-tu", type=int, default=1000, help="functions per translation unit")
    ap.add_argument("--jobs", "-j", type=int, default=2)
    ap.add_argument("--force", action="store_true", help="rebuild even if cached")
    ap.add_argument("--print-source", action="store_true", help="print the first TU and exit")
    a = ap.parse_args(argv)
    if a.print_source:
        prog = Program(a.seed, a.functions, a.structs or default_structs(a.functions), a.per_tu)
        prog.plan()
        ch = set(choose_changes(prog, a.changes))
        sys.stdout.write(prog.header() + prog.tu_source(0, ch))
        return 0
    r = build_pair(a.functions, a.structs, a.seed, a.changes, a.per_tu, a.jobs, a.force)
    print(json.dumps({"dir": str(r["dir"]), "cached": r["cached"],
                      "base": {"dll": str(r["base"].dll), "pdb": str(r["base"].pdb), **r["base"].info},
                      "new": {"dll": str(r["new"].dll), "pdb": str(r["new"].pdb), **r["new"].info},
                      "functions_file": str(r["functions_file"])}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
