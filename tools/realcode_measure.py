"""How well ``pehp diff`` finds the changed functions of a real-code pair.

The ground truth (:mod:`realcode_truth`) says which functions changed between the old
release and the new one, compiled plainly.  The intermediate is the new release
compiled with exactly those functions (and the new ones) as its hot-patch list, so
every truth-changed function is in the list, and every function outside the list is
compiled as in the plain build.  A listed function reaches globals through ``__ref_``
pointers, so its code differs from the base's in any case; that does not inflate the
figures: a function counts as a false positive only when pehp reports it changed and
the truth says unchanged, and no such function is listed.

Two runs of ``pehp diff BASE INTERMEDIATE``:

- *with PDBs*: the images with their PDBs, the intermediate's objects and functions
  file (as ``pehp check`` gets them);
- *without PDBs*: the two DLLs copied alone into a directory, so pehp finds no PDB and
  pairs functions by structure only (exports, content, call graph, order).  Its
  functions are then named here by their RVA in the PDB-loaded images, so a wrong
  pairing shows as a false positive (``a -> b``).

recall = |pehp changed ∩ truth changed| / |truth changed|; a false positive is a
function pehp reports changed (status ``changed`` or ``changed-through-data``) that
the truth says unchanged.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from realcode_truth import Truth, function_key

if TYPE_CHECKING:  # pragma: no cover
    from pehotpatch.diff import DiffResult
    from pehotpatch.image.symbols import Function
    from pehotpatch.load import LoadedImage


@dataclass
class Measure:
    truth_changed: int
    pehp_changed: int
    found: int
    false_positives: list[str] = field(default_factory=list)
    missed: list[str] = field(default_factory=list)  # "key (what pehp said)"

    @property
    def recall(self) -> float:
        return self.found / self.truth_changed if self.truth_changed else 1.0


def _key(f: Function) -> str:
    return function_key(f.name, f.module, f.is_static)


def score(d: DiffResult, truth: Truth, base_named: LoadedImage, new_named: LoadedImage) -> Measure:
    """Compare ``d``'s changed functions with ``truth``; names come from the two named images.

    Each miss says what pehp made of the function: its status, the function it was
    paired with instead, or that it found no function starting there; each false
    positive whose extent differs from the PDB's says so."""
    bnames = {f.rva: _key(f) for f in base_named.index.functions}
    nnames = {f.rva: _key(f) for f in new_named.index.functions}
    sizes = {_key(f): f.size for f in base_named.index.functions}
    brva = {k: r for r, k in bnames.items()}
    nrva = {k: r for r, k in nnames.items()}
    bstart = {f.rva: f for f in d.base.index.functions}
    nstart = {f.rva for f in d.new.index.functions}
    reported: set[str] = set()
    status: dict[str, str] = {}
    mispaired: list[str] = []
    for fd in d.functions:
        kb = bnames.get(fd.base.rva, f"?{fd.base.rva:#x}")
        kn = nnames.get(fd.new.rva, f"?{fd.new.rva:#x}")
        if kb != kn:
            status.setdefault(kb, f"paired with {kn}")
            status.setdefault(kn, f"paired with {kb}")
            if fd.changed:
                mispaired.append(f"{kb} -> {kn}")
            continue
        status[kb] = fd.status.value
        if fd.changed:
            reported.add(kb)
    for p in d.correlation.functions:
        kb, kn = bnames.get(p.base.rva, "?"), nnames.get(p.new.rva, "?")
        if kb != kn:
            status.setdefault(kb, f"paired with {kn}")
            status.setdefault(kn, f"paired with {kb}")
    for f in d.removed_functions:
        status.setdefault(bnames.get(f.rva, ""), "unpaired")
    for f in d.added_functions:
        status.setdefault(nnames.get(f.rva, ""), "unpaired")

    def why(k: str) -> str:
        if brva.get(k) not in bstart or nrva.get(k) not in nstart:
            return "no function found starting there"
        return status.get(k, "unchanged" if k in brva else "not in the image")

    def extent(k: str) -> str:
        f = bstart.get(brva.get(k, -1))
        return f" (extent {f.size} bytes, {sizes[k]} in the PDB)" if f and f.size != sizes[k] else ""

    want = set(truth.changed)
    found = reported & want
    missed = [f"{k} ({why(k)})" for k in sorted(want - reported)]
    fps = [k + extent(k) for k in sorted(reported - want)]
    return Measure(len(want), len(reported) + len(mispaired), len(found), fps + sorted(mispaired), missed)


def measure_pair(out: Path, truth: Truth, objects: Path, functions_file: Path
                 ) -> tuple[Measure, Measure, DiffResult, DiffResult]:
    """The with-PDB and without-PDB measures of ``out/base.dll`` against ``out/intermediate.dll``;
    also returns both diffs (the with-PDB one is what ``pehp check`` judges)."""
    from pehotpatch.diff import diff_images
    from pehotpatch.load import load_image

    bi = load_image(out / "base.dll", pdb=out / "base.pdb")
    ni = load_image(out / "intermediate.dll", pdb=out / "intermediate.pdb", objects=objects,
                    functions_file=functions_file)
    with_pdb = diff_images(bi, ni)
    bare = out / "nopdb"
    shutil.rmtree(bare, ignore_errors=True)
    bare.mkdir()
    for name in ("base.dll", "intermediate.dll"):
        shutil.copy2(out / name, bare / name)
    bb = load_image(bare / "base.dll")
    nb = load_image(bare / "intermediate.dll")
    if bb.index.has_pdb or nb.index.has_pdb:
        raise RuntimeError(f"{bare}: a PDB was found for the DLLs copied alone")
    without = diff_images(bb, nb)
    return score(with_pdb, truth, bi, ni), score(without, truth, bi, ni), with_pdb, without
