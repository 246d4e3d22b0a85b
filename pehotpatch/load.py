"""Load one image with everything known about it: PE, PDB, objects, hot-patch set.

This is the first stage of every command; later stages receive a :class:`LoadedImage`
and never open files themselves.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pehotpatch.errors import FormatError, InputError
from pehotpatch.hotpatch_set import HotpatchSet, build_hotpatch_set, canonicalize
from pehotpatch.image.pe import PEImage
from pehotpatch.image.pe_reader import load_pe
from pehotpatch.image.symbols import SymbolIndex, build_index
from pehotpatch.perf import paused_gc

if TYPE_CHECKING:  # pragma: no cover
    from pehotpatch.image.coff import CoffObject
    from pehotpatch.image.pdb import Pdb

PathLike = str | os.PathLike[str]


@dataclass
class LoadedImage:
    path: str
    pe: PEImage
    index: SymbolIndex
    pdb_path: str | None = None
    objects: list[CoffObject] = field(default_factory=list)
    hotpatch: HotpatchSet | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def pdb(self) -> Pdb | None:
        return self.index.pdb


def find_pdb(pe: PEImage) -> Path | None:
    """The PDB next to the image: ``<stem>.pdb`` or the CodeView record's file name."""
    here = Path(pe.path)
    cands = [here.with_suffix(".pdb")]
    if pe.codeview and pe.codeview.pdb_path:
        base = pe.codeview.pdb_path.replace("\\", "/").rsplit("/", 1)[-1]
        if base:
            cands.append(here.parent / base)
    for c in cands:
        if c.is_file():
            return c
    return None


def load_image(
    path: PathLike,
    *,
    pdb: PathLike | None = None,
    objects: PathLike | None = None,
    functions_file: PathLike | None = None,
    ignore_pdb_mismatch: bool = False,
    discover_pdb: bool = True,
) -> LoadedImage:
    """Read an image and its debug information into one :class:`LoadedImage`.

    ``pdb`` given explicitly must match the image's CodeView GUID/age (unless
    ``ignore_pdb_mismatch``); a PDB found next to the image that does not match is
    ignored with a note."""
    with paused_gc():
        return _load_image(path, pdb, objects, functions_file, ignore_pdb_mismatch, discover_pdb)


def _load_image(path: PathLike, pdb: PathLike | None, objects: PathLike | None,
                functions_file: PathLike | None, ignore_pdb_mismatch: bool,
                discover_pdb: bool) -> LoadedImage:
    from pehotpatch.image.pdb import load_pdb

    pe = load_pe(path)
    notes: list[str] = []
    pdb_obj = None
    pdb_path: Path | None = Path(pdb) if pdb is not None else None
    explicit = pdb_path is not None
    if pdb_path is None and discover_pdb:
        pdb_path = find_pdb(pe)
    if pdb_path is not None:
        pdb_obj = load_pdb(pdb_path)
        problem = pdb_mismatch(pe, pdb_obj)
        if problem and not ignore_pdb_mismatch:
            if explicit:
                raise InputError(f"{problem}; pass --ignore-pdb-mismatch to use it anyway", pdb_path)
            notes.append(f"ignored {pdb_path}: {problem}")
            pdb_obj, pdb_path = None, None
        elif problem:
            notes.append(f"using {pdb_path} although {problem}")
    objs: list[CoffObject] = []
    if objects is not None:
        from pehotpatch.image.coff import load_objects

        objs = load_objects(objects)
    index = build_index(pe, pdb_obj)
    check_code_extent(index)
    hset = build_hotpatch_set(pdb=pdb_obj, objects=objs, functions_file=functions_file)
    canonicalize(hset, lambda n: f.name if (f := index.functions_by_name.get(n)) else None)
    return LoadedImage(
        path=str(path),
        pe=pe,
        index=index,
        pdb_path=str(pdb_path) if pdb_path else None,
        objects=objs,
        hotpatch=hset,
        notes=notes + index.notes,
    )


def pdb_mismatch(pe: PEImage, pdb: Pdb) -> str | None:
    """Why ``pdb`` does not belong to ``pe``, or None when it does."""
    cv = pe.codeview
    if cv is None:
        return "the image has no CodeView record to match the PDB against"
    if not pdb.matches(cv.guid, cv.age):
        return (f"PDB GUID/age {pdb.guid}/{pdb.age} does not match the image's CodeView record "
                f"{cv.guid}/{cv.age}")
    return None


# Functions may overlap a little (a procedure and a chained .pdata fragment inside it),
# but every function's bytes are decoded on their own: code claimed more than this many
# times over means crafted or corrupt size fields, and would cost unbounded time.
MAX_CODE_COVERAGE = 4


def check_code_extent(index: SymbolIndex) -> None:
    """Refuse an index whose functions, together, claim far more code than the sections hold."""
    img = index.image
    per: dict[int, int] = {}
    for f in index.functions:
        s = img.section_at(f.rva)
        if s is not None:
            per[s.rva] = per.get(s.rva, 0) + max(0, min(f.size, s.rva + s.size - f.rva))
    for srva, total in per.items():
        s = img.section_at(srva)
        if s is not None and total > MAX_CODE_COVERAGE * s.size + 4096:
            pdb = index.pdb
            raise FormatError(
                f"functions claim {total:#x} bytes of code in section {s.name!r} of {s.size:#x} "
                "bytes (overlapping or oversized procedure records)",
                pdb.path if pdb is not None else img.path,
            )
