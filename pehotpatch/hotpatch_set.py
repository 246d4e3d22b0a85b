"""The hot-patch set: which functions of the intermediate were compiled for hot-patching.

Evidence, and where each name came from:

- ``pdb``: S_HOTPATCHFUNC records in the PDB (MSVC's linker keeps them; lld-link
  drops them);
- ``objects``: S_HOTPATCHFUNC records in the objects' ``.debug$S`` sections;
- ``functions-file``: the file given to clang's ``-fms-secure-hotpatch-functions-file``;
- ``code``: the function reads a ``__ref_*`` pointer, which only code compiled for
  hot-patching does (added once the code has been normalised).

Disagreements between sources are kept, because each one is a build mistake worth
reporting (a listed function the compiler never marked, for instance).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pehotpatch.errors import read_input_text

if TYPE_CHECKING:  # pragma: no cover
    from pehotpatch.image.coff import CoffObject
    from pehotpatch.image.pdb import Pdb

SOURCES = ("pdb", "objects", "functions-file", "code")


@dataclass
class HotpatchSet:
    names: dict[str, set[str]] = field(default_factory=dict)  # name -> sources
    available: set[str] = field(default_factory=set)  # sources that were consulted

    def add(self, name: str, source: str) -> None:
        self.names.setdefault(name, set()).add(source)

    def __contains__(self, name: object) -> bool:
        return name in self.names

    def __len__(self) -> int:
        return len(self.names)

    def sorted(self) -> list[str]:
        return sorted(self.names)

    def compiler_marked(self, name: str) -> bool | None:
        """True/False when a compiler source (PDB or objects) was consulted, else None."""
        if not ({"pdb", "objects"} & self.available):
            return None
        return bool({"pdb", "objects"} & self.names.get(name, set()))

    def disagreements(self) -> list[tuple[str, str]]:
        """(name, explanation) for names that some consulted source lacks."""
        out = []
        compiler = {"pdb", "objects"} & self.available
        for name in self.sorted():
            srcs = self.names[name]
            if "functions-file" in srcs and compiler and not (compiler & srcs):
                out.append((name, "listed in the functions file, but the compiler did not mark it "
                                  "(no S_HOTPATCHFUNC record)"))
            elif "functions-file" in self.available and "functions-file" not in srcs and srcs & compiler:
                out.append((name, "marked by the compiler, but not listed in the functions file"))
        return out


def read_functions_file(path: str | os.PathLike[str]) -> list[str]:
    """Names from a clang functions file: one per line, blank lines skipped."""
    lines = read_input_text(path, "functions file").splitlines()
    return [ln.strip() for ln in lines if ln.strip()]


def build_hotpatch_set(*, pdb: Pdb | None = None, objects: Iterable[CoffObject] = (),
                       functions_file: str | os.PathLike[str] | None = None) -> HotpatchSet:
    hs = HotpatchSet()
    if pdb is not None:
        hs.available.add("pdb")
        for name in pdb.hotpatch_functions:
            hs.add(name, "pdb")
    objs = list(objects)
    if objs:
        hs.available.add("objects")
        for obj in objs:
            # Plain procedure names (C++: ``ns::f``), matched through the LF_FUNC_ID of
            # each S_HOTPATCHFUNC; the record itself holds the decorated linker name.
            for name in getattr(obj, "hotpatch_procedures", None) or obj.hotpatch_functions:
                hs.add(name, "objects")
    if functions_file is not None:
        hs.available.add("functions-file")
        for name in read_functions_file(functions_file):
            hs.add(name, "functions-file")
    # A PDB without S_HOTPATCHFUNC (lld drops them) says nothing about the set.
    if pdb is not None and not pdb.hotpatch_functions:
        hs.available.discard("pdb")
    return hs


def canonicalize(hs: HotpatchSet, resolve: Callable[[str], str | None]) -> None:
    """Rename decorated names (``?f@@YAHXZ``, as the functions file and S_HOTPATCHFUNC
    hold them) to the index's function names, merging their sources."""
    for name in [n for n in hs.names if n.startswith("?")]:
        plain = resolve(name)
        if plain and plain != name:
            for src in hs.names.pop(name):
                hs.add(plain, src)


def add_code_evidence(hs: HotpatchSet, functions_reading_ref_slots: Iterable[str]) -> None:
    hs.available.add("code")
    for name in functions_reading_ref_slots:
        hs.add(name, "code")
