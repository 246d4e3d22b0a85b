"""Where the interesting fields of a seed file are: the map structure-aware mutators use.

A :class:`~.layout_model.Layout` lists named integer fields (file offset, width, values
worth trying) in groups ("pe.loadcfg", "pdb.tpi.records", ...), byte regions (section
data, stream blocks), interesting truncation points and fixed-size tables.  Layouts are
computed once per seed file from the unmodified bytes, with pehp's own readers and
structure declarations where they expose the positions and by walking the structures
where they do not: :mod:`.layout_pe`, :mod:`.layout_pdb`, :mod:`.layout_coff`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .layout_coff import coff_layout
from .layout_model import Layout
from .layout_pdb import pdb_layout
from .layout_pe import pe_layout


def layout_for(data: bytes, kind: str) -> Layout:
    """The layout of a seed; ``kind`` is "pe", "pdb", "coff" or "raw"."""
    builder: dict[str, Callable[[bytes], Layout]] = {"pe": pe_layout, "pdb": pdb_layout,
                                                    "coff": coff_layout}
    if kind in builder:
        return builder[kind](data).finish()
    return Layout("raw", len(data), regions=[("file", 0, len(data))], cuts=[0, len(data) // 2]).finish()


def describe(lay: Layout) -> dict[str, Any]:
    """Counts per group (for ``python -m fuzz layout FILE``)."""
    return {"kind": lay.kind, "size": lay.size, "groups": {k: len(v) for k, v in lay.groups.items()},
            "regions": len(lay.regions), "cuts": len(lay.cuts), "tables": len(lay.tables),
            "terminators": len(lay.terminators), "type_refs": len(lay.type_refs)}
