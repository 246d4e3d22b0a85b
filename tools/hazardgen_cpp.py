"""Generated C++ base/intermediate pairs whose change carries virtual-dispatch hazards.

    .venv/bin/python tools/hazardgen_cpp.py --seeds 0-9 [--hazards a,b] [--keep DIR]

The C++ counterpart of tools/hazardgen.py: every seed writes one CRT-free C++ unit (``/TP
/GR- /EHs-c-``: no RTTI, no exceptions; no ``new``/``delete``, objects are placed into static
storage with a placement ``operator new`` of the unit's own; no pure virtual methods, which
would need ``_purecall``) for a base and one for an intermediate.  The unit is made of
modules, one per hazard, present in both builds with constants drawn from the seed; the
intermediate applies the change of a seeded random subset of ``HAZARDS``.  DllMain builds
the objects at process attach (so the running base's objects carry the base's vtable
pointers, as a patch applied later finds them); each module's ``extern "C"`` exports take
and return one integer, so that ``pehp simulate``'s calls reach the hazard.  Unlisted
virtual methods add to a mutable counter, so a call that runs the patch image's plainly
compiled copy of one writes the patch image's counter (``patch-image-state``).

A function is listed when its source changed (methods by their decorated name, as clang's
``-fms-secure-hotpatch-functions-file`` takes them; the names are read from a plain
compile of the intermediate).  Each hazard's verdict is written from what the running
process does after the patch is applied, not from the check's output.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import hazardgen  # noqa: E402  (tools/ is not a package)
import pairgen  # noqa: E402

Hazard, Pair = hazardgen.Hazard, hazardgen.Pair

HAZARDS = {h.name: h for h in (
    Hazard("virtual_override", "virtual", "patchable", None,
           "a listed override's body changes; the objects were built by the base, whose vtable slot names the "
           "base's method, which the patch redirects"),
    Hazard("vptr_ctor", "virtual", "patchable", None,
           "a listed function constructs an object into static storage (the constructor inlined stores the "
           "vtable pointer; hot-patch code reads it through __ref_??_7Circle@@6B@, bound to the base's "
           "vtable, whose slots name the base's methods)"),
    Hazard("vtable_override_added", "4", "rejected", "HP311",
           "a class gains an override (new, listed): the objects the base built keep the base's vtable, "
           "whose slot still names the inherited method; an unlisted caller dispatches through it"),
    Hazard("vtable_grow_end", "4", "rejected", "HP311",
           "a new virtual method is added at the end of a class; a listed function calls it on an object the "
           "base built (its vtable has no such slot)"),
    Hazard("vtable_grow_mid", "4", "rejected", "HP311",
           "a new virtual method is inserted before an existing one; a listed caller dispatches to the moved "
           "slot on an object the base built"),
    Hazard("mfp_compare", "2", "rejected", "HP603",
           "a listed function compares a stored member-function pointer with &Shape::twice (unpatched)"),
    Hazard("vptr_compare", "virtual", "patchable", None,
           "a listed function compares an object's vtable pointer with the one a local object gets (read "
           "through __ref_??_7Square@@6B@, bound to the base's vtable)"),
    Hazard("benign_c", "benign", "patchable", None,
           "an extern \"C\" listed function's constant changes"),
    Hazard("benign_member", "benign", "patchable", None,
           "a listed non-virtual member function, called by an unlisted export, changes"),
)}

CHANCE = {name: (0.5 if h.klass == "benign" else 0.35 if h.verdict == "patchable" else 0.08)
          for name, h in HAZARDS.items()}

#: Both vtable growths edit the same class: at most one of them.
EXCLUSIVE = (("vtable_grow_end", "vtable_grow_mid"),)

CXXFLAGS = [*pairgen.CFLAGS, "/TP", "/GR-", "/EHs-c-", "/std:c++17", "/Zc:threadSafeInit-"]


def choose(seed: int) -> list[str]:
    r = random.Random(seed * 7_919 + 29)
    picked = [n for n in HAZARDS if r.random() < CHANCE[n]]
    for group in EXCLUSIVE:
        picked = [n for n in picked if n not in group or n == next(g for g in picked if g in group)]
    return picked or ["benign_c"]


def expectation(hazards: list[str]) -> str | None:
    verdicts = {HAZARDS[h].verdict for h in hazards}
    if "rejected" in verdicts:
        return "rejected"
    return "patchable" if verdicts == {"patchable"} else None


def render(seed: int, hazards: list[str] | None = None) -> Pair:
    """The base and intermediate sources of seed (hazards: override the seeded choice)."""
    r = random.Random(seed)
    on = set(choose(seed) if hazards is None else hazards)
    k = [r.randrange(3, 200) for _ in range(24)]
    listed: set[str] = set()
    parts: dict[bool, list[str]] = {False: [], True: []}

    def both(text: str) -> None:
        parts[False].append(text)
        parts[True].append(text)

    def alt(name: str, base: str, new: str, *names: str) -> None:
        hit = name in on
        parts[False].append(base)
        parts[True].append(new if hit else base)
        if hit:
            listed.update(names)

    both("typedef unsigned int u32;\ntypedef decltype(sizeof 0) usize;\n"
         "inline void *operator new(usize, void *p) noexcept { return p; }\n"
         "#define API extern \"C\" __declspec(dllexport)\n#define NOINL __declspec(noinline)\n"
         "u32 g_hits;\n")
    # the classes: Shape with two (three) virtual methods, Square and Circle overriding one each
    mid = "extra" if "vtable_grow_mid" in on else ""
    end = "extra" if "vtable_grow_end" in on else ""
    for hit in (False, True):
        m, e = (mid, end) if hit else ("", "")
        parts[hit].append(
            "struct Shape {\n  u32 k;\n  explicit Shape(u32 v) : k(v) {}\n"
            "  virtual u32 area(u32 x);\n" + ("  virtual u32 extra(u32 x);\n" if m else "")
            + "  virtual u32 scale(u32 x);\n" + ("  virtual u32 extra(u32 x);\n" if e else "")
            + "  u32 twice(u32 x);\n  u32 half(u32 x);\n};\n"
            "struct Square : Shape {\n  explicit Square(u32 v) : Shape(v) {}\n  u32 area(u32 x) override;\n};\n"
            "struct Circle : Shape {\n  u32 r;\n  Circle(u32 v, u32 rr) : Shape(v), r(rr) {}\n"
            + ("  u32 area(u32 x) override;\n" if hit and "vtable_override_added" in on else "")
            + "  u32 scale(u32 x) override;\n};\n")
        if m or e:
            parts[hit].append(f"NOINL u32 Shape::extra(u32 x) {{ return x * {k[0]} + k; }}\n")
    if mid or end:
        listed.add("Shape::extra")
    if "vtable_override_added" in on:
        parts[True].append(f"NOINL u32 Circle::area(u32 x) {{ return x + r * {k[17]}; }}\n")
        listed.add("Circle::area")
    both(f"NOINL u32 Shape::area(u32 x) {{ g_hits += 1; return x + k * {k[1]}; }}\n"
         f"NOINL u32 Shape::scale(u32 x) {{ g_hits += 2; return x * 3 + k + {k[2]}; }}\n"
         f"NOINL u32 Shape::twice(u32 x) {{ return x * 2 + {k[3]}; }}\n"
         f"NOINL u32 Circle::scale(u32 x) {{ g_hits += 5; return x * r + k; }}\n")
    alt("benign_member", f"NOINL u32 Shape::half(u32 x) {{ return x / 2 + k + {k[4]}; }}\n",
        f"NOINL u32 Shape::half(u32 x) {{ return x / 2 + k + {k[4] + 3}; }}\n", "Shape::half")
    alt("virtual_override", f"NOINL u32 Square::area(u32 x) {{ g_hits += 3; return x * k + {k[5]}; }}\n",
        f"NOINL u32 Square::area(u32 x) {{ g_hits += 3; return x * k + {k[5] + 7}; }}\n", "Square::area")
    both("alignas(16) unsigned char g_store[64];\nalignas(16) unsigned char g_store2[32];\n"
         "Shape *g_sq;\nShape *g_ci;\nShape *g_c2;\ntypedef u32 (Shape::*mfp)(u32);\nmfp g_m;\n"
         "API u32 hits(u32 x) { return g_hits + x; }\n"
         "API u32 vo_area(u32 x) { return g_sq->area(x); }\n"
         "API u32 vo_scale(u32 x) { return g_ci->scale(x) + g_sq->scale(x); }\n"
         "API u32 bn_half(u32 x) { return g_ci->half(x); }\n"
         "API u32 mp_call(u32 x) { return (g_sq->*g_m)(x); }\n")
    # a listed function that constructs an object into static storage (stores a vtable pointer)
    alt("vptr_ctor", f"API u32 vc_make(u32 x) {{ g_c2 = new (g_store2) Circle(x & 0xFF, {k[6]}); return x; }}\n",
        f"API u32 vc_make(u32 x) {{ g_c2 = new (g_store2) Circle((x & 0xFF) + 1, {k[6]}); return x; }}\n",
        "vc_make")
    both("API u32 vc_use(u32 x) { return g_c2->scale(x) + g_c2->area(x); }\n")
    # vtable growth: a listed caller dispatching through the new or the moved slot
    alt("vtable_grow_end", f"API u32 vg_call(u32 x) {{ return g_sq->scale(x) + {k[7]}; }}\n",
        f"API u32 vg_call(u32 x) {{ return g_sq->extra(x) + {k[7]}; }}\n", "vg_call")
    alt("vtable_grow_mid", f"API u32 vm_call(u32 x) {{ return g_ci->scale(x) + {k[8]}; }}\n",
        f"API u32 vm_call(u32 x) {{ return g_ci->scale(x) + {k[8] + 1}; }}\n", "vm_call")
    # identity: member-function pointer and vtable pointer comparisons
    alt("mfp_compare", "API u32 mp_is(u32 x) { return (g_m == &Shape::twice) + x * 2; }\n",
        "API u32 mp_is(u32 x) { return (g_m == &Shape::twice) + x * 2 + 1; }\n", "mp_is")
    alt("vptr_compare", "API u32 vp_is(u32 x) { Square probe(x); "
        "return (*(void **)g_sq == *(void **)&probe) * 5 + x; }\n",
        "API u32 vp_is(u32 x) { Square probe(x); return (*(void **)g_sq == *(void **)&probe) * 5 + x + 1; }\n",
        "vp_is")
    # benign
    alt("benign_c", f"API u32 bn_one(u32 x) {{ return x * {k[9]} + g_hits; }}\n",
        f"API u32 bn_one(u32 x) {{ return x * {k[9] + 2} + g_hits; }}\n", "bn_one")
    both("extern \"C\" int __stdcall DllMain(void *instance, unsigned long reason, void *reserved)\n{\n"
         "    (void)instance; (void)reserved;\n    if (reason == 1) {\n"
         f"        g_sq = new (g_store) Square({k[10]});\n"
         f"        g_ci = new (g_store + 32) Circle({k[11]}, {k[12]});\n"
         f"        g_c2 = new (g_store2) Circle(1, {k[6]});\n"
         "        g_m = &Shape::twice;\n    }\n    return 1;\n}\n"
         "typedef struct { unsigned int Size; unsigned char rest[0x140 - 4]; } load_config;\n"
         "extern \"C\" const load_config _load_config_used = {sizeof(load_config)};\n")
    injected = [h for h in HAZARDS if h in on]
    rules = {h: HAZARDS[h].rule for h in injected if HAZARDS[h].rule}
    return Pair(seed, injected, listed, "".join(parts[False]), "".join(parts[True]), expectation(injected),
                {h: r for h, r in rules.items() if r})


def _decorated(d: Path, obj: str) -> dict[str, str]:
    """Plain name (``Shape::half``) -> decorated name of the functions defined in obj."""
    nm = subprocess.run(["llvm-nm-22", "--defined-only", obj], cwd=d, check=True, capture_output=True,
                        text=True).stdout
    syms = [ln.split()[-1] for ln in nm.splitlines() if ln.split() and ln.split()[-1].startswith("?")]
    out: dict[str, str] = {}
    if not syms:
        return out
    und = subprocess.run(["llvm-undname-22"], input="\n".join(syms) + "\n", check=True, capture_output=True,
                         text=True).stdout
    plain = [ln for ln in und.splitlines() if ln.strip() and not ln.startswith("?")]
    for sym, text in zip(syms, plain, strict=False):
        head = text.split("(")[0].split()
        if head and "::" in head[-1]:
            out[head[-1]] = sym
    return out


def build(src: str, d: Path, name: str, listed: set[str] | None) -> None:
    """Compile and link one build of hz.cpp in d (the intermediate: with the functions file)."""
    d.mkdir(parents=True, exist_ok=True)
    (d / "hz.cpp").write_text(src)
    pre = ["setarch", "-R"] if shutil.which("setarch") else []
    marks = []
    if listed is not None:
        subprocess.run([*pre, pairgen.CLANG, *CXXFLAGS, "hz.cpp", "/Foplain.obj"], cwd=d, check=True,
                       capture_output=True)
        deco = _decorated(d, "plain.obj")
        names = sorted(deco.get(n, n) for n in listed)
        (d / "hotpatch_functions.txt").write_text("".join(f"{n}\n" for n in names))
        (d / "plain.obj").unlink()
        marks = ["-fms-secure-hotpatch-functions-file=hotpatch_functions.txt"]
    subprocess.run([*pre, pairgen.CLANG, *CXXFLAGS, *marks, "hz.cpp", "/Fohz.obj"], cwd=d, check=True,
                   capture_output=True)
    hazardgen.link(d, name)


def generate(seed: int, d: Path, hazards: list[str] | None = None) -> Pair:
    """Write and build seed's pair: d/base.dll+pdb, d/n/intermediate.dll+pdb+hotpatch_functions.txt."""
    return hazardgen.generate(seed, d, hazards, render=render, build=build)


def main(argv: list[str] | None = None) -> int:
    return hazardgen.main(argv, known=HAZARDS, make=generate, doc=__doc__, prefix="hazardgen-cpp-")


if __name__ == "__main__":
    sys.exit(main())
