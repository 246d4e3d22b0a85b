"""Names for addresses of a mapped image: function, global and section, from pehp's
symbol index (the PDB next to the image when there is one), built on first use so
that mapping and patching a large image costs no symbol work."""

from __future__ import annotations

import os
from functools import cached_property

from pehotpatch.errors import PehpError
from pehotpatch.image.pe import PEImage
from pehotpatch.image.symbols import Function, Global, SymbolIndex, build_index, plain_name


class Names:
    def __init__(self, pe: PEImage, pdb: str | os.PathLike[str] | None = None,
                 discover: bool = True):
        self.pe = pe
        self.pdb_path = pdb
        self.discover = discover
        self.notes: list[str] = []

    @cached_property
    def index(self) -> SymbolIndex:
        from pehotpatch.image.pdb import load_pdb
        from pehotpatch.load import find_pdb, pdb_mismatch

        path = self.pdb_path
        if path is None and self.discover:
            path = find_pdb(self.pe)
        pdb = None
        if path is not None:
            try:
                pdb = load_pdb(path)
            except PehpError as exc:
                self.notes.append(f"symbols without the PDB: {exc}")
            else:
                problem = pdb_mismatch(self.pe, pdb)
                if problem:
                    self.notes.append(f"ignored {path}: {problem}")
                    pdb = None
        return build_index(self.pe, pdb)

    @property
    def has_pdb(self) -> bool:
        return self.index.has_pdb

    def function(self, rva: int) -> Function | None:
        return self.index.function_at(rva)

    def plain(self, name: str) -> str:
        return plain_name(name, self.pe.machine)

    def names_of(self, f: Function) -> set[str]:
        return {self.plain(n) for n in (f.name, *f.aliases) if not n.startswith("sub_")}

    def global_at(self, rva: int) -> Global | None:
        return self.index.global_at(rva)

    def section_name(self, rva: int) -> str:
        s = self.pe.section_at(rva)
        return s.name if s is not None else "(headers)" if rva < self.pe.size_of_headers else "?"

    def describe(self, rva: int) -> str:
        """``function+0x12`` or ``section+0x34``."""
        f = self.function(rva)
        if f is not None and f.rva <= rva < max(f.end, f.rva + 1):
            off = rva - f.rva
            return self.plain(f.name) + (f"+{off:#x}" if off else "")
        s = self.pe.section_at(rva)
        if s is not None:
            return f"{s.name}+{rva - s.rva:#x}"
        return f"RVA {rva:#x}"

    @cached_property
    def global_names(self) -> set[str]:
        return {self.plain(g.name) for g in self.index.globals}

    def is_new_global(self, g: Global, base: Names) -> bool:
        """``g`` (of this image, a patch) is a global the base does not have: only said
        when the base's PDB names all its globals."""
        return base.has_pdb and self.plain(g.name) not in base.global_names

    @cached_property
    def function_names(self) -> set[str]:
        out: set[str] = set()
        for f in self.index.functions:
            out |= self.names_of(f)
        return out
