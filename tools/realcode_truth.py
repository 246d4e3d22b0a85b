"""Ground truth for the real-code run: what changed between two builds, from their objects.

Both builds are compiled with /Gy, so every function has its own COMDAT section and
every reference to anything outside it is a relocation.  A function's *normalised
code* is its section's bytes with each relocated field replaced by what the
relocation names: the target symbol and the addend the field holds.  References that
go through a section symbol are named by the symbol they land in; a section that only
exists for one function (an associative COMDAT: its jump tables) is inlined, its own
relocations back into the function named by their offset.  Two functions are equal
when their normalised code is equal; nothing about addresses or layout remains.

A function whose normalised code is equal but that reads named read-only data
(a table, a constant) whose normalised contents differ is *changed through data*:
its behaviour changes all the same, so it counts as changed.

Besides functions, the objects give the exports (``/EXPORT:`` directives), the
imports (symbols no object of the link defines) and the mutable data (symbols in
writable sections: size and normalised initial contents).  Type layouts are not
compared here (they live in CodeView type records); docs/REALCODE.md says how they
were judged.

Keys: an external function is keyed by its name; a static one by
``<object stem>:<name>`` (static helpers from shared headers exist once per object).

This module reads the objects with :mod:`realcode_coff` and shares nothing with
pehotpatch's differ, whose results it is used to measure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from realcode_coff import (
    CLASS_EXTERNAL,
    CLASS_STATIC,
    SCN_LNK_COMDAT,
    CoffFile,
    Section,
    Symbol,
    read_coff,
)

_EXPORT = re.compile(r'[/-]export:"?([^\s",]+)', re.IGNORECASE)


@dataclass
class Build:
    """Everything the ground truth keeps of one build's objects."""

    functions: dict[str, str] = field(default_factory=dict)  # key -> normalised code
    reads: dict[str, set[str]] = field(default_factory=dict)  # key -> read-only data keys it names
    rodata: dict[str, str] = field(default_factory=dict)  # key -> normalised contents
    mutable: dict[str, str] = field(default_factory=dict)  # key -> size and normalised contents
    exports: set[str] = field(default_factory=set)
    imports: set[str] = field(default_factory=set)


@dataclass
class Truth:
    changed_code: list[str]
    changed_through_data: list[str]
    added: list[str]
    removed: list[str]
    unchanged: int
    exports_added: list[str]
    exports_removed: list[str]
    imports_added: list[str]
    imports_removed: list[str]
    mutable_changed: list[str]
    mutable_added: list[str]
    mutable_removed: list[str]

    @property
    def changed(self) -> list[str]:
        return sorted({*self.changed_code, *self.changed_through_data})


def function_key(name: str, module: str | None, is_static: bool) -> str:
    """The ground truth's key of a function named ``name`` defined in ``module``."""
    if not is_static:
        return name
    stem = Path((module or "").replace("\\", "/")).stem
    return f"{stem}:{name}"


def _key(obj: CoffFile, sym: Symbol) -> str:
    return function_key(sym.name, obj.path.name, sym.storage == CLASS_STATIC)


def _extent(obj: CoffFile, sym: Symbol) -> int:
    """Where the symbol's bytes end: at the next named symbol of its section, or its end."""
    sec = obj.sections[sym.section]
    later = [s.value for s in obj.by_section.get(sym.section, ()) if s.value > sym.value]
    return min(later) if later else sec.size


class _Normaliser:
    def __init__(self, obj: CoffFile, defined_ro: dict[str, str]):
        self.obj = obj
        self.defined_ro = defined_ro  # external name -> key, over every object of the build
        self.reads: set[str] = set()

    def text(self, sec: Section, start: int, end: int, home: int, depth: int = 0) -> str:
        """Bytes [start, end) of ``sec`` with each relocated field replaced by its target."""
        out = []
        at = start
        for r in sorted(sec.relocs, key=lambda r: r.offset):
            if r.offset < start or r.offset >= end:
                continue
            out.append(sec.data[at:r.offset].hex())
            fieldb = sec.data[r.offset:r.offset + r.size]
            addend = int.from_bytes(fieldb, "little", signed=True) if sec.data else 0
            out.append(f"<{r.type}:{self.target(r.symbol, addend, home, depth)}>")
            at = r.offset + r.size
        if sec.data:
            out.append(sec.data[at:end].hex())
        else:
            out.append(f"zero*{end - start}")
        return "".join(out)

    def target(self, index: int, addend: int, home: int, depth: int) -> str:
        obj = self.obj
        sym = obj.symbols[index]
        if sym.section == home:
            return f"self+{sym.value + addend}"
        if sym.section <= 0 or not sym.is_section_symbol:
            if sym.section > 0:
                self._note_read(sym)
            elif sym.name in self.defined_ro:
                self.reads.add(self.defined_ro[sym.name])
            return f"{sym.name}+{addend}"
        sec = obj.sections[sym.section]
        if sec.associated == home or (sec.flags & SCN_LNK_COMDAT and not obj.by_section.get(sec.number)):
            if depth > 2:
                return f"{sec.name}+{addend}"
            return f"[{self.text(sec, 0, sec.size, home, depth + 1)}]+{addend}"
        holder = None
        for s in obj.by_section.get(sec.number, ()):
            if s.value <= addend:
                holder = s
        if holder is None:
            return f"{sec.name}+{addend}"
        self._note_read(holder)
        return f"{holder.name}+{addend - holder.value}"

    def _note_read(self, sym: Symbol) -> None:
        sec = self.obj.sections[sym.section]
        if not sec.is_code and not sec.writable:
            self.reads.add(_key(self.obj, sym))


def read_build(obj_dir: Path, skip: tuple[str, ...] = ()) -> Build:
    """The ground-truth view of every ``*.obj`` of one build (objects named in ``skip`` left out)."""
    objs = [read_coff(p) for p in sorted(obj_dir.glob("*.obj")) if p.name not in skip]
    b = Build()
    defined_ro: dict[str, str] = {}
    defined: set[str] = set()
    undefined: set[str] = set()
    for obj in objs:
        b.exports.update(_EXPORT.findall(obj.directives()))
        for sym in obj.symbols.values():
            if sym.storage == CLASS_EXTERNAL and sym.section == 0 and sym.value == 0:
                undefined.add(sym.name)
            elif sym.storage == CLASS_EXTERNAL and sym.section > 0:
                defined.add(sym.name)
                sec = obj.sections[sym.section]
                if not sec.is_code and not sec.writable:
                    defined_ro[sym.name] = sym.name
    b.imports = {n.removeprefix("__imp_") for n in undefined - defined}
    for obj in objs:
        for secnum, syms in obj.by_section.items():
            sec = obj.sections[secnum]
            if sec.name.startswith((".debug", ".drectve", ".pdata", ".xdata", ".llvm")):
                continue
            for sym in syms:
                if sec.is_code and not sym.is_function:
                    continue
                norm = _Normaliser(obj, defined_ro)
                text = norm.text(sec, sym.value, _extent(obj, sym), secnum)
                key = _key(obj, sym)
                if sec.is_code:
                    b.functions[key] = text
                    b.reads[key] = norm.reads
                elif sec.writable:
                    b.mutable[key] = f"{_extent(obj, sym) - sym.value}:{text}"
                else:
                    b.rodata[key] = text
    return b


def _diff_keys(a: dict[str, str], b: dict[str, str]) -> tuple[list[str], list[str], list[str]]:
    changed = sorted(k for k in a.keys() & b.keys() if a[k] != b[k])
    return changed, sorted(b.keys() - a.keys()), sorted(a.keys() - b.keys())


def compare_builds(base: Build, new: Build) -> Truth:
    """What changed from ``base`` to ``new``, by the rules of the module docstring."""
    code, added, removed = _diff_keys(base.functions, new.functions)
    changed_ro = {k for k in base.rodata.keys() & new.rodata.keys() if base.rodata[k] != new.rodata[k]}
    through = sorted(k for k in base.functions.keys() & new.functions.keys()
                     if k not in code and (base.reads[k] | new.reads[k]) & changed_ro)
    unchanged = len(base.functions.keys() & new.functions.keys()) - len(code) - len(through)
    m_changed, m_added, m_removed = _diff_keys(base.mutable, new.mutable)
    return Truth(code, through, added, removed, unchanged,
                 sorted(new.exports - base.exports), sorted(base.exports - new.exports),
                 sorted(new.imports - base.imports), sorted(base.imports - new.imports),
                 m_changed, m_added, m_removed)


def compare_dirs(base_objs: Path, new_objs: Path, skip: tuple[str, ...] = ()) -> Truth:
    return compare_builds(read_build(base_objs, skip), read_build(new_objs, skip))
