"""Generated base/intermediate pairs whose change carries hot-patch hazards (issue 13's classes).

    .venv/bin/python tools/hazardgen.py --seeds 0-9 [--keep DIR]    # writes and builds, prints the truth

Every seed writes one C unit for a base and one for an intermediate.  The unit is made of
modules, one per hazard, each present in both builds with constants drawn from the seed; the
intermediate applies the change of a seeded random subset of the hazards (``HAZARDS``), so a
seed's change is a combination of them.  Each module's exports take one integer and return
one, so that ``pehp simulate``'s calls reach the hazard (docs/SIMULATE.md "Calls"): an export
that calls through a callback slot, one that tells whether a stored pointer equals ``&f``,
one that reads what DllMain built before the patch was applied.

Each hazard says what the gate must say about it (``Hazard.verdict``: "rejected" with the
rule that names it, "patchable" with a rule that must be absent, or None when the rules do
not settle it); a seed's expected verdict is "rejected" when any injected hazard must be
rejected, "patchable" when every injected hazard must be patchable, else unknown.

Both builds use tools/pairgen.py's compiler flags (clang-cl-22, lld-link-22, x64, /O2 /Z7,
CRT-free); the intermediate compiles its listed functions with
``-fms-secure-hotpatch-functions-file``.  A function is listed when its source changed,
except where the hazard is an unlisted change (a switch whose lookup table alone changed).
"""

from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pairgen  # noqa: E402  (tools/ is not a package)


@dataclass(frozen=True)
class Hazard:
    name: str
    klass: str  # the class of issue 13 ("1".."8") or a short word
    verdict: str | None  # what the gate must say when this hazard alone is injected
    rule: str | None  # rejected: the rule that must name it; patchable: a rule that must be absent
    what: str


HAZARDS = {h.name: h for h in (
    Hazard("callback_escape", "1", "rejected", "HP601",
           "a listed function stores the address of a new, unlisted function that writes a mutable global "
           "into a callback slot an export calls through"),
    Hazard("callback_pure", "1", "patchable", "HP601",
           "as callback_escape, but the new function touches no mutable state"),
    Hazard("callback_listed", "1", "patchable", "HP601",
           "as callback_escape, but the new function is listed (hot-patch compiled)"),
    Hazard("callback_indirect", "1", "rejected", "HP601",
           "as callback_escape, but a new listed helper that the listed function calls stores the address"),
    Hazard("callback_table", "1", "rejected", "HP601",
           "as callback_escape, but the address comes from a new const table of function pointers"),
    Hazard("global_fnptr", "1", "rejected", "HP603",
           "a new mutable global holds &f of an unpatched function that writes a mutable global; "
           "a listed function calls through it"),
    Hazard("fnptr_compare", "2", "rejected", "HP603",
           "a listed function compares a stored pointer with &f of an unpatched function"),
    Hazard("fnptr_store", "2", "rejected", "HP603",
           "a listed function stores &f of an unpatched function; unpatched code compares against &f"),
    Hazard("fnptr_table", "2", "rejected", "HP603",
           "a listed function compares a stored pointer with an entry of a new const table of &f"),
    Hazard("ops_changed", "2", "rejected", "HP401",
           "the entries of an existing const table of function pointers, read by a listed function, are swapped"),
    Hazard("data_pointer_table", "1", "rejected", "HP601",
           "a listed function reaches mutable globals through a new const table of their addresses"),
    Hazard("new_global", "global", "patchable", None,
           "a new mutable global used only by a listed function"),
    Hazard("table_shared", "6", "rejected", "HP501",
           "a const table read by a listed and an unlisted function changes"),
    Hazard("table_switch", "6", "rejected", "HP501",
           "an unlisted function's switch, compiled to a lookup table, changes one entry (code equal)"),
    Hazard("table_via_pointer", "6", "rejected", "HP401",
           "a const table that listed and unlisted functions read through a pointer in base data changes"),
    Hazard("table_listed", "6", "patchable", None,
           "a const table read only by a listed function changes"),
    Hazard("constant_string", "7", "patchable", "HP403",
           "a listed function's string literals change (the base's are no longer used)"),
    Hazard("constant_float", "7", "patchable", "HP403",
           "a listed function's float constant changes (the base's is no longer used)"),
    Hazard("init_once", "5", "rejected", "HP109",
           "a listed function called only from DllMain's process-attach path changes"),
    Hazard("init_dllmain", "5", "rejected", "HP109",
           "DllMain's process-attach path itself changes (DllMain listed)"),
    Hazard("layout_static", "4", "rejected", "HP311",
           "an initialised static struct gains a field in the middle; its listed accessors change"),
    Hazard("layout_pool", "4", "rejected", "HP311",
           "a struct living in a byte pool (built by DllMain) gains a field; its listed accessors change"),
    Hazard("qualifier_restrict", "8", "patchable", "HP301",
           "a listed function's pointer parameter gains restrict (and its body a fix)"),
    Hazard("qualifier_const", "8", "patchable", "HP301",
           "a listed function's integer parameter gains a top-level const (and its body a fix)"),
    Hazard("array_grow", "4", "rejected", "HP402",
           "a zero-initialised mutable array grows; its listed users index the new entries"),
    Hazard("layout_local", "4", "rejected", "HP311",
           "a struct that an unlisted caller keeps on its stack grows; the listed callee it passes it to writes the "
           "new fields"),
    Hazard("data_init", "data", "rejected", "HP401",
           "the initial value of an initialised mutable global changes"),
    Hazard("qualifier_volatile", "8", "patchable", "HP301",
           "a listed function's integer parameter gains a top-level volatile (and its body a fix)"),
    Hazard("benign_const", "benign", "patchable", None,
           "constants of listed functions that share a mutable counter change"),
    Hazard("benign_added", "benign", "patchable", None,
           "a new listed function, called by a listed one"),
)}

#: Injection probability per hazard (the benign ones more often, so that many seeds are patchable).
CHANCE = {name: (0.5 if h.klass == "benign" else 0.3 if h.verdict == "patchable" else 0.06)
          for name, h in HAZARDS.items()}


@dataclass
class Pair:
    seed: int
    hazards: list[str]  # injected, in HAZARDS order
    listed: set[str]  # the functions file of the intermediate
    base: str  # C source
    new: str
    expected: str | None  # rejected | patchable | None (not settled by the rules)
    rules: dict[str, str] = field(default_factory=dict)  # hazard -> the rule the verdict must carry/lack


#: Hazards that change the same function: at most one of each group is injected.
EXCLUSIVE = (("callback_escape", "callback_pure", "callback_listed", "callback_indirect", "callback_table"),)


def choose(seed: int) -> list[str]:
    r = random.Random(seed * 104_729 + 13)
    picked = [n for n in HAZARDS if r.random() < CHANCE[n]]
    for group in EXCLUSIVE:
        picked = [n for n in picked if n not in group or n == next(g for g in picked if g in group)]
    return picked or ["benign_const"]


def expectation(hazards: list[str]) -> str | None:
    verdicts = {HAZARDS[h].verdict for h in hazards}
    if "rejected" in verdicts:
        return "rejected"
    return "patchable" if verdicts == {"patchable"} else None


def _init(values) -> str:
    """A C initialiser list."""
    return "{" + ", ".join(map(str, values)) + "}"


def render(seed: int, hazards: list[str] | None = None) -> Pair:
    """The base and intermediate sources of seed (hazards: override the seeded choice)."""
    r = random.Random(seed)
    on = set(choose(seed) if hazards is None else hazards)
    k = [r.randrange(3, 200) for _ in range(40)]
    listed: set[str] = set()
    parts: dict[bool, list[str]] = {False: [], True: []}
    init: dict[bool, list[str]] = {False: [], True: []}

    def both(text: str) -> None:
        parts[False].append(text)
        parts[True].append(text)

    def alt(name: str, base: str, new: str, *names: str) -> None:
        """base or new text by whether hazard ``name`` is on; names: listed when it is."""
        hit = name in on
        parts[False].append(base)
        parts[True].append(new if hit else base)
        if hit:
            listed.update(names)

    both("typedef unsigned int u32;\nint _fltused;\n#define API __declspec(dllexport)\n"
         "#define NOINL __declspec(noinline)\n")
    # class 1: a callback slot in base data, armed by a listed function
    both("typedef u32 (*callback)(u32);\ncallback g_slot;\nu32 g_cb_count;\n"
         f"static NOINL u32 cb_old(u32 x) {{ return x + {k[0]}; }}\n")
    esc = next((h for h in EXCLUSIVE[0] if h in on), None)
    arm = "g_slot = cb_old;"
    new_cb = ""
    if esc:
        body = "return x * %d + 1;" if esc == "callback_pure" else "g_cb_count += x; return g_cb_count ^ %d;"
        new_cb = f"NOINL u32 cb_new(u32 x) {{ {body % k[1]} }}\n"
        arm = "g_slot = cb_new;"
        listed.add("cb_arm")
        if esc == "callback_listed":
            listed.add("cb_new")
        elif esc == "callback_indirect":
            new_cb += "NOINL void cb_install(void) { g_slot = cb_new; }\n"
            arm = "cb_install();"
            listed.add("cb_install")
        elif esc == "callback_table":
            new_cb += "static const callback k_cbs[2] = {cb_old, cb_new};\n"
            arm = "g_slot = k_cbs[(x >> 2) & 1];"
    parts[False].append(f"API u32 cb_arm(u32 x) {{ g_slot = cb_old; return x & {k[2]}; }}\n")
    parts[True].append(new_cb + f"API u32 cb_arm(u32 x) {{ {arm} return x & {k[2]}; }}\n")
    # a new mutable global holding the address of an unpatched function that writes state
    both("u32 g_gp;\nstatic NOINL u32 gp_bump(u32 x) { g_gp += x; return g_gp; }\n"
         "API u32 gp_get(u32 x) { return g_gp + x; }\n")
    alt("global_fnptr", f"API u32 gp_call(u32 x) {{ return gp_bump(x) + {k[23]}; }}\n",
        f"callback g_gp_fn = gp_bump;\nAPI u32 gp_call(u32 x) {{ return g_gp_fn(x) + {k[23] + 1}; }}\n",
        "gp_call")
    both("API u32 cb_fire(u32 x) { return g_slot ? g_slot(x) : x; }\n"
         "API u32 cb_count(u32 x) { return g_cb_count + x; }\n")
    # class 2: function-pointer identity
    both(f"static NOINL u32 h_a(u32 x) {{ return x + {k[3]}; }}\n"
         f"static NOINL u32 h_b(u32 x) {{ return x * {k[4] % 7 + 2}; }}\ncallback g_handler;\n"
         "API u32 id_apply(u32 x) { return g_handler ? g_handler(x) : x; }\n")
    alt("fnptr_compare", "API u32 id_is_a(u32 x) { return (g_handler == h_a) + x * 2; }\n",
        "API u32 id_is_a(u32 x) { return (g_handler == h_a || g_handler == 0) + x * 2; }\n", "id_is_a")
    alt("fnptr_store", "API u32 id_select(u32 x) { g_handler = (x & 1) ? h_b : h_a; return x; }\n",
        "API u32 id_select(u32 x) { g_handler = (x & 3) == 1 ? h_b : h_a; return x; }\n", "id_select")
    alt("fnptr_table", "API u32 ft_is(u32 x) { return (g_handler == ((x >> 2) & 1 ? h_b : h_a)) * 3 + x; }\n",
        "static const callback k_hs[2] = {h_a, h_b};\n"
        "API u32 ft_is(u32 x) { return (g_handler == k_hs[(x >> 2) & 1]) * 3 + x + 1; }\n", "ft_is")
    # (three entries: never equal to k_hs, which the compiler would merge with it)
    alt("ops_changed", "static const callback k_ops[3] = {h_a, h_b, h_a};\n"
        f"API u32 op_call(u32 x) {{ return k_ops[(x >> 1) % 3](x) + {k[24]}; }}\n",
        "static const callback k_ops[3] = {h_b, h_a, h_b};\n"
        f"API u32 op_call(u32 x) {{ return k_ops[(x >> 1) % 3](x) + {k[24] + 1}; }}\n", "op_call")
    both("u32 g_c0;\nu32 g_c1;\nAPI u32 dp_get(u32 x) { return g_c0 * 3 + g_c1 + x; }\n")
    alt("data_pointer_table", "API u32 dp_bump(u32 x) { u32 *c = (x & 1) ? &g_c1 : &g_c0; *c += x; return *c; }\n",
        "static u32 *const k_ctrs[2] = {&g_c0, &g_c1};\n"
        "API u32 dp_bump(u32 x) { u32 *c = k_ctrs[x & 1]; *c += x + 1; return *c; }\n", "dp_bump")
    # a new mutable global, used only by a listed function
    alt("new_global", f"API u32 ng_step(u32 x) {{ return x * {k[5]}; }}\n",
        f"static u32 g_ng_acc = {k[6]};\nAPI u32 ng_step(u32 x) {{ g_ng_acc += x; return x * {k[5]} + g_ng_acc; }}\n",
        "ng_step")
    # class 6: const tables
    tab = [r.randrange(1, 1000) for _ in range(8)]
    tab2 = list(tab)
    tab2[r.randrange(8)] += r.randrange(1, 50)
    ts = tab2 if "table_shared" in on else tab
    parts[False].append(f"static const u32 k_shared[8] = {_init(tab)};\n")
    parts[True].append(f"static const u32 k_shared[8] = {_init(ts)};\n")
    alt("table_shared", f"API u32 ts_a(u32 x) {{ return k_shared[x & 7] + {k[7]}; }}\n",
        f"API u32 ts_a(u32 x) {{ return k_shared[x & 7] + {k[7] + 1}; }}\n", "ts_a")
    both(f"API u32 ts_b(u32 x) {{ return k_shared[(x ^ 3) & 7] * {k[8]}; }}\n")
    weights = [r.randrange(1, 500) for _ in range(6)]
    w2 = list(weights)
    w2[r.randrange(6)] += r.randrange(1, 9)
    for hit, ws in ((False, weights), (True, w2 if "table_switch" in on else weights)):
        cases = "".join(f" case {i}: return {w};" for i, w in enumerate(ws))
        parts[hit].append(f"API u32 tw_weight(u32 x) {{ switch (x & 7) {{{cases} default: return 0; }} }}\n")
    own = [r.randrange(1, 1000) for _ in range(8)]
    own2 = [v + 3 if i == 2 else v for i, v in enumerate(own)]
    getter = "API u32 tl_get(u32 x) { return k_own[x & 7] ^ x; }\n"
    alt("table_listed", f"static const u32 k_own[8] = {_init(own)};\n{getter}",
        f"static const u32 k_own[8] = {_init(own2)};\n{getter}", "tl_get")
    # class 7: constants
    words = ["alpha", "bravo", "charlie", "delta-echo", "foxtrot-golf", "hotel", "india-juliett-k"]
    w = r.sample(words, 4)
    both("static NOINL u32 text_len(const char *s) { u32 n = 0; while (s[n]) n++; return n; }\n")
    alt("constant_string", f'API u32 cs_len(u32 x) {{ return text_len((x & 1) ? "{w[0]}" : "{w[1]}"); }}\n',
        f'API u32 cs_len(u32 x) {{ return text_len((x & 1) ? "{w[2]}!" : "{w[3]}?!"); }}\n', "cs_len")
    f1, f2 = 1.0 + k[9] / 64, 1.0 + k[10] / 64 + 0.5
    alt("constant_float", f"API u32 cf_scale(u32 x) {{ return (u32)((float)(x & 0xFFFF) * {f1}f); }}\n",
        f"API u32 cf_scale(u32 x) {{ return (u32)((float)(x & 0xFFFF) * {f2}f); }}\n", "cf_scale")
    # class 5: run once at process attach
    both("u32 g_limit;\nu32 g_attach;\nAPI u32 in_limit(u32 x) { return g_limit + g_attach + x; }\n")
    alt("init_once", f"static NOINL void in_setup(void) {{ g_limit = {k[11]}; }}\n",
        f"static NOINL void in_setup(void) {{ g_limit = {k[11] + 5}; }}\n", "in_setup")
    init[False].append("in_setup();")
    init[True].append("in_setup();")
    init[False].append(f"g_attach = {k[12]};")
    init[True].append(f"g_attach = {k[12] + 1 if 'init_dllmain' in on else k[12]};")
    if "init_dllmain" in on:
        listed.add("DllMain")
    # class 4: layouts of objects the base already built
    mid = "u32 stamp; " if "layout_static" in on else ""
    parts[False].append(f"struct lay {{ u32 a; u32 b; u32 c; }};\nstruct lay g_lay = {{{k[13]}, {k[14]}, {k[15]}}};\n")
    parts[True].append(f"struct lay {{ u32 a; {mid}u32 b; u32 c; }};\nstruct lay g_lay = "
                       + _init([k[13], 1, k[14], k[15]] if mid else [k[13], k[14], k[15]]) + ";\n")
    alt("layout_static", "API u32 ly_get(u32 x) { return g_lay.b + (x & 3) * g_lay.c; }\n"
        "API u32 ly_set(u32 x) { g_lay.c = x & 0xFF; return g_lay.a; }\n",
        "API u32 ly_get(u32 x) { return g_lay.b + (x & 3) * g_lay.c; }\n"
        "API u32 ly_set(u32 x) { g_lay.c = x & 0xFF; g_lay.stamp++; return g_lay.a; }\n", "ly_get", "ly_set")
    stamp = "u32 stamp; " if "layout_pool" in on else ""
    for hit in (False, True):
        s = stamp if hit else ""
        put_extra = "r->stamp = x ^ 1; " if hit and s else ""
        parts[hit].append(f"struct rec {{ u32 key; {s}u32 value; }};\nunsigned char g_pool[256];\n"
                          f"API u32 pl_put(u32 x) {{ struct rec *r = (struct rec *)g_pool + (x & 7); "
                          f"r->key = x; {put_extra}r->value = x * {k[16]}; return x & 7; }}\n"
                          f"API u32 pl_get(u32 x) {{ struct rec *r = (struct rec *)g_pool + (x & 7); "
                          f"return r->value + r->key; }}\n")
    if "layout_pool" in on:
        listed.update(("pl_put", "pl_get"))
    for hit in (False, True):
        init[hit].append(f"for (u32 i = 0; i < 8; i++) pl_put(i * {k[17]} + 1);")
    # class 8: ABI-neutral qualifiers
    both(f"u32 g_vals[16] = {_init(r.randrange(1, 99) for _ in range(16))};\n")
    rq, cq = "qualifier_restrict" in on, "qualifier_const" in on or "qualifier_volatile" in on
    quals = ("const " if "qualifier_const" in on else "") + ("volatile " if "qualifier_volatile" in on else "")
    new_sig = f"const u32 *{'restrict ' if rq else ''}p, {quals}u32 n"
    parts[False].append("NOINL u32 q_sum(const u32 *p, u32 n) { u32 s = 0; for (u32 i = 0; i < n; i++) "
                        "s += p[i]; return s; }\n")
    if rq or cq:
        parts[True].append(f"NOINL u32 q_sum({new_sig}) {{ u32 s = 0; for (u32 i = 0; i < n && i < 16; i++) "
                           f"s += p[i] ^ {k[18]}; return s; }}\n")
        listed.add("q_sum")
    else:
        parts[True].append(parts[False][-1])
    both("API u32 q_first(u32 x) { return q_sum(g_vals, x & 15); }\n")
    tp = [r.randrange(1, 1000) for _ in range(8)]
    tp2 = [v + 11 if i == 5 else v for i, v in enumerate(tp)]
    for hit in (False, True):
        vals = tp2 if hit and "table_via_pointer" in on else tp
        parts[hit].append(f"static const u32 k_tp[8] = {_init(vals)};\nconst u32 *g_tp = k_tp;\n")
    alt("table_via_pointer", f"API u32 tp_a(u32 x) {{ return g_tp[x & 7] + {k[25]}; }}\n",
        f"API u32 tp_a(u32 x) {{ return g_tp[x & 7] + {k[25] + 1}; }}\n", "tp_a")
    both("API u32 tp_b(u32 x) { return g_tp[(x ^ 5) & 7] * 3; }\n")
    n = 12 if "array_grow" in on else 8
    parts[False].append("u32 g_arr[8];\nu32 g_after_arr;\nAPI u32 ag_put(u32 x) { g_arr[x % 8] += x; "
                        "return g_arr[x % 8] + g_after_arr; }\n")
    parts[True].append(f"u32 g_arr[{n}];\nu32 g_after_arr;\nAPI u32 ag_put(u32 x) {{ g_arr[x % {n}] += x; "
                       f"return g_arr[x % {n}] + g_after_arr; }}\n")
    for hit in (False, True):
        m = n if hit else 8
        parts[hit].append(f"API u32 ag_sum(u32 x) {{ u32 s = 0; for (u32 i = 0; i < {m}; i++) s += g_arr[i] * (i + 1); "
                          "return s + x; }\n")
    if "array_grow" in on:
        listed.update(("ag_put", "ag_sum"))
    both("API u32 ag_after(u32 x) { g_after_arr += 1; return g_after_arr + x; }\n")
    grown = "u32 c; u32 d[4]; " if "layout_local" in on else ""
    for hit in (False, True):
        g = grown if hit else ""
        fill = "p->c = x; for (u32 i = 0; i < 4; i++) p->d[i] = x + i; " if g else ""
        parts[hit].append(f"struct lx {{ u32 a; u32 b; {g}}};\n"
                          f"NOINL void lx_fill(struct lx *p, u32 x) {{ p->b = x * {k[26]}; {fill}}}\n"
                          "API u32 lx_get(u32 x) { u32 keep = x ^ 0x5A5A; struct lx v; v.a = x; lx_fill(&v, x); "
                          "return v.a + v.b + keep; }\n")
    if grown:
        listed.add("lx_fill")
    # an initialised mutable global
    alt("data_init", f"u32 g_init = {k[19]};\n", f"u32 g_init = {k[19] + 7};\n")
    both("API u32 di_get(u32 x) { g_init += x & 1; return g_init; }\n")
    # benign changes
    both("u32 g_bn;\n")
    c2 = k[21] + 1 if "benign_const" in on else k[21]
    alt("benign_const", f"API u32 bn_one(u32 x) {{ g_bn += x; return g_bn * {k[20]}; }}\n",
        f"API u32 bn_one(u32 x) {{ g_bn += x; return g_bn * {k[20] + 2}; }}\n", "bn_one")
    if "benign_added" in on:
        parts[True].append(f"NOINL u32 bn_extra(u32 x) {{ g_bn ^= x; return x + {k[22]}; }}\n"
                           f"API u32 bn_two(u32 x) {{ return bn_extra(x) + g_bn * {c2}; }}\n")
        parts[False].append(f"API u32 bn_two(u32 x) {{ return x + g_bn * {k[21]}; }}\n")
        listed.update(("bn_extra", "bn_two"))
    else:
        alt("benign_const", f"API u32 bn_two(u32 x) {{ return x + g_bn * {k[21]}; }}\n",
            f"API u32 bn_two(u32 x) {{ return x + g_bn * {c2}; }}\n", "bn_two")
    # DllMain and the load configuration
    for hit in (False, True):
        parts[hit].append("int __stdcall DllMain(void *instance, unsigned long reason, void *reserved)\n{\n"
                          "    (void)instance; (void)reserved;\n    if (reason == 1) {\n        "
                          + "\n        ".join(init[hit]) + "\n    }\n    return 1;\n}\n"
                          "typedef struct { unsigned int Size; unsigned char rest[0x140 - 4]; } load_config;\n"
                          "const load_config _load_config_used = {.Size = sizeof(load_config)};\n")
    injected = [h for h in HAZARDS if h in on]
    rules = {h: HAZARDS[h].rule for h in injected if HAZARDS[h].rule}
    return Pair(seed, injected, listed, "".join(parts[False]), "".join(parts[True]), expectation(injected),
                {h: r for h, r in rules.items() if r})


def build(src: str, d: Path, name: str, listed: set[str] | None) -> None:
    """Compile and link one build of hz.c in d (the intermediate: with the functions file)."""
    d.mkdir(parents=True, exist_ok=True)
    (d / "hz.c").write_text(src)
    marks = []
    if listed is not None:
        (d / "hotpatch_functions.txt").write_text("".join(f"{n}\n" for n in sorted(listed)))
        marks = ["-fms-secure-hotpatch-functions-file=hotpatch_functions.txt"]
    pre = ["setarch", "-R"] if shutil.which("setarch") else []
    subprocess.run([*pre, pairgen.CLANG, *pairgen.CFLAGS, *marks, "hz.c", "/Fohz.obj"], cwd=d, check=True,
                   capture_output=True)
    link(d, name)


def link(d: Path, name: str) -> None:
    """Link d/hz.obj into d/<name>.dll and its PDB (CRT-free, hot-patch compatible)."""
    subprocess.run([pairgen.LLD, "/nologo", "/dll", "/machine:x64", "/entry:DllMain", "/nodefaultlib",
                    "/noimplib", "/debug", f"/pdb:{name}.pdb", "/pdbaltpath:%_PDB%", "/Brepro",
                    "/functionpadmin:6", "/hotpatchcompatible", f"/out:{name}.dll", "hz.obj"],
                   cwd=d, check=True, capture_output=True)


def generate(seed: int, d: Path, hazards: list[str] | None = None, *, render=render, build=build) -> Pair:
    """Write and build seed's pair: d/base.dll+pdb, d/n/intermediate.dll+pdb+hotpatch_functions.txt
    (``render``, ``build``: another generator's, e.g. tools/hazardgen_cpp.py)."""
    pair = render(seed, hazards)
    build(pair.base, d / "b", "base", None)
    build(pair.new, d / "n", "intermediate", pair.listed)
    for ext in ("dll", "pdb"):
        shutil.copy(d / "b" / f"base.{ext}", d / f"base.{ext}")
    return pair


def main(argv: list[str] | None = None, *, known: dict | None = None, make=generate, doc: str | None = None,
         prefix: str = "hazardgen-") -> int:
    """The command line (``known``, ``make``, ``doc``, ``prefix``: another generator's)."""
    known = HAZARDS if known is None else known
    ap = argparse.ArgumentParser(description=(doc or __doc__ or "").split("\n\n")[0])
    ap.add_argument("--seeds", default="0-9", help="e.g. 0-49 or 1,5,9")
    ap.add_argument("--hazards", help="comma-separated: inject exactly these (default: the seeded choice)")
    ap.add_argument("--keep", type=Path, help="build in this directory and keep it")
    args = ap.parse_args(argv)
    hazards = args.hazards.split(",") if args.hazards else None
    for h in hazards or []:
        if h not in known:
            ap.error(f"unknown hazard {h!r} (known: {', '.join(known)})")
    root = args.keep or Path(tempfile.mkdtemp(prefix=prefix))
    try:
        for seed in pairgen._seeds(args.seeds):
            pair = make(seed, root / f"seed{seed}", hazards)
            print(f"seed {seed}: {', '.join(pair.hazards)} -> expected {pair.expected or '?'}; "
                  f"listed {', '.join(sorted(pair.listed)) or '-'}", flush=True)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
