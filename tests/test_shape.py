"""The package's shape: stages import only themselves and lower stages, the module import
graph has no cycle, loading's results are not changed by later stages, and modules keep to
about 500 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "pehotpatch"

#: Stages from the bottom up; a module belongs to the first prefix that matches its name.
STAGES: list[tuple[str, ...]] = [
    ("pehotpatch.errors", "pehotpatch.perf", "pehotpatch.cache", "pehotpatch.structs", "pehotpatch.output", "pehotpatch.version",
     "pehotpatch.vocab"),
    ("pehotpatch.image",),
    ("pehotpatch.table",),
    ("pehotpatch.hotpatch_set", "pehotpatch.load"),
    ("pehotpatch.disasm", "pehotpatch.codemap", "pehotpatch.templates", "pehotpatch.correlate",
     "pehotpatch.diff", "pehotpatch.listing"),
    ("pehotpatch.reach",),
    ("pehotpatch.rules", "pehotpatch.check", "pehotpatch.waivers"),
    ("pehotpatch.plan",),
    ("pehotpatch.emit", "pehotpatch.verify"),
    ("pehotpatch.emulate",),
    ("pehotpatch.render", "pehotpatch.report", "pehotpatch.tree"),
    ("pehotpatch.api", "pehotpatch.simulate"),
    ("pehotpatch.cli", "pehotpatch._entry", "pehotpatch"),
]


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def stage(mod: str) -> int:
    best = (-1, -1)
    for i, prefixes in enumerate(STAGES):
        for p in prefixes:
            if (mod == p or mod.startswith(p + ".")) and len(p) > best[1]:
                best = (i, len(p))
    return best[0]


def imports(path: Path, mod: str) -> set[str]:
    tree = ast.parse(path.read_text())
    out: set[str] = set()
    pkg = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("pehotpatch"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")
                base = base[: len(base) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            if name.startswith("pehotpatch"):
                out.add(name)
                for a in node.names:  # "from pehotpatch.x import y" where y is a module
                    cand = f"{name}.{a.name}"
                    if (PKG.parent / (cand.replace(".", "/") + ".py")).exists() or \
                            (PKG.parent / cand.replace(".", "/") / "__init__.py").exists():
                        out.add(cand)
    out.discard(mod)
    return out


def graph() -> dict[str, set[str]]:
    mods = {module_name(p): p for p in PKG.rglob("*.py")}
    return {m: {i for i in imports(p, m) if i in mods} for m, p in mods.items()}


def test_every_module_has_a_stage():
    assert [m for m in graph() if stage(m) < 0] == []


def test_no_import_from_a_lower_stage_to_a_higher_one():
    bad = sorted(f"{m} -> {i}" for m, deps in graph().items() for i in deps
                 if stage(i) > stage(m) and not m == "pehotpatch")
    assert bad == []


def test_no_import_cycle():
    g = graph()
    g = {m: {i for i in deps if not m.startswith(i + ".")} for m, deps in g.items()}  # a package's own __init__
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for i in sorted(g.get(m, ())):
            if state.get(i) == 1:
                cycles.append(path[path.index(i):] + [i] if i in path else [m, i])
            elif i not in state:
                visit(i, path + [i])
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            visit(m, [m])
    assert cycles == []


def test_modules_keep_to_one_job():
    big = sorted((len(p.read_text().splitlines()), str(p.relative_to(ROOT))) for p in PKG.rglob("*.py"))
    assert [b for b in big if b[0] > 560] == []


def test_diff_does_not_change_what_loading_produced():
    import pehotpatch as pehp

    d = ROOT / "samples" / "x64" / "fix_globals"
    b, n = pehp.load_pair(d / "base.dll", d / "intermediate.dll")
    before = (len(b.index.functions), len(n.index.functions))
    res = pehp.diff_loaded(b, n)
    assert (len(b.index.functions), len(n.index.functions)) == before
    assert res.base.pe is b.pe and res.new.pe is n.pe
    assert len(res.base.index.functions) >= before[0]


@pytest.mark.parametrize("module", ["pehotpatch.rules.functions", "pehotpatch.image.pe"])
def test_spot_checks(module):
    g = graph()
    assert not any(i.startswith("pehotpatch.render") for i in g[module])
