"""Checks of an applied table that running the calls may not reach: what the loader does
not verify and a call sequence may never exercise.

- a FUNCTION record (either direction) joining two functions of different names;
- a ``__ref_`` slot of the patch image that still points into the patch image (unless
  its global is new: the base does not have it, so it lives in the patch image, as the
  check's HP404 warning says);
- a direct call or jump from a patched function to the patch image's copy of a
  function the base also has, when no backward redirection covers that copy.

Names come from the symbol indexes (PDB, exports, COFF); without names a check says
nothing rather than guess.
"""

from __future__ import annotations

import re

import capstone

from pehotpatch.emulate.engine import World
from pehotpatch.emulate.hptable import FUNCTION
from pehotpatch.emulate.names import Names
from pehotpatch.emulate.results import (
    F_MISSING_BACKWARD,
    F_REF_UNBOUND,
    F_WRONG_FUNCTION,
    Finding,
)
from pehotpatch.emulate.space import MappedImage
from pehotpatch.image.machine import Machine
from pehotpatch.image.symbols import ref_target_name
from pehotpatch.table.model import HotPatchTable

MAX_SCAN = 0x10000  # bytes of one patched function scanned for branches
_TARGET = re.compile(r"#?(0x[0-9a-fA-F]+)$")


def _is_branch(machine: Machine, mnemonic: str) -> bool:
    if machine is Machine.ARM64:
        return mnemonic in ("b", "bl", "cbz", "cbnz", "tbz", "tbnz") or mnemonic.startswith("b.")
    return mnemonic == "call" or mnemonic.startswith("j")


def audit(world: World, base: MappedImage, patch: MappedImage, table: HotPatchTable) -> list[Finding]:
    bn, pn = world.names[base.role], world.names[patch.role]
    out = _wrong_functions(bn, pn, table)
    out += _unbound_slots(world, patch, pn, bn)
    out += _uncovered_copies(world, patch, bn, pn, table)
    return out


def _wrong_functions(bn: Names, pn: Names, table: HotPatchTable) -> list[Finding]:
    out = []
    for c in table.chunks:
        if c.type != FUNCTION:
            continue
        site_n, ref_n = (pn, bn) if c.inverse else (bn, pn)
        for r in c.records:
            fs, ft = site_n.function(r.site), ref_n.function(r.target)
            if fs is None or ft is None:
                continue
            a, b = site_n.names_of(fs), ref_n.names_of(ft)
            if a and b and not a & b:
                out.append(Finding(F_WRONG_FUNCTION,
                    f"{c.type_name} record redirects {'patch' if c.inverse else 'base'} "
                    f"{site_n.plain(fs.name)} to {'base' if c.inverse else 'patch'} "
                    f"{ref_n.plain(ft.name)}"))
    return out


def _unbound_slots(world: World, patch: MappedImage, pn: Names, bn: Names) -> list[Finding]:
    out = []
    ptr = world.abi.ptr_size
    for g in pn.index.globals:
        target = ref_target_name(g.name)
        if target is None or g.rva + ptr > patch.size:
            continue
        value = world.space.read_ptr(patch.va + g.rva)
        held = pn.global_at(value - patch.va) if patch.contains(value) else None
        if held is not None and pn.plain(held.name) == pn.plain(target) and pn.is_new_global(held, bn):
            continue  # a new global: it has no base copy to bind to
        if patch.contains(value):
            out.append(Finding(F_REF_UNBOUND,
                f"{pn.plain(g.name)} still points into the patch image "
                f"({pn.describe(value - patch.va)}), not at the base's {pn.plain(target)}"))
    return out


def _uncovered_copies(world: World, patch: MappedImage, bn: Names, pn: Names,
                      table: HotPatchTable) -> list[Finding]:
    patched = {r.target for c in table.chunks if c.type == FUNCTION and not c.inverse
               for r in c.records}
    covered = {r.site for c in table.chunks if c.type == FUNCTION and c.inverse for r in c.records}
    base_names = bn.function_names
    out, seen = [], set()
    for rva in sorted(patched):
        f = pn.function(rva)
        if f is None or f.size <= 0:
            continue
        for target in _branch_targets(world, patch, f.rva, min(f.size, MAX_SCAN)):
            callee = pn.function(target)
            if callee is None or callee.rva != target or callee.rva in patched:
                continue
            if target in covered or target in seen or not pn.names_of(callee) & base_names:
                continue
            seen.add(target)
            out.append(Finding(F_MISSING_BACKWARD,
                f"patched {pn.plain(f.name)} branches to the patch image's copy of "
                f"{pn.plain(callee.name)}, which no backward redirection sends to the base's"))
    return out


def _branch_targets(world: World, patch: MappedImage, rva: int, size: int) -> list[int]:
    """RVAs of direct branch targets inside the patch image (as mapped)."""
    m = world.abi.machine
    if m is Machine.ARM64:
        md = capstone.Cs(capstone.CS_ARCH_ARM64, capstone.CS_MODE_ARM)
    else:
        md = capstone.Cs(capstone.CS_ARCH_X86,
                         capstone.CS_MODE_64 if m is Machine.X64 else capstone.CS_MODE_32)
    md.skipdata = True
    code = world.space.read(patch.va + rva, size)
    out = []
    for _addr, _size, mnemonic, op_str in md.disasm_lite(code, patch.va + rva):
        if not _is_branch(m, mnemonic):
            continue
        hit = _TARGET.search(op_str.strip())
        if hit is None:
            continue
        va = int(hit.group(1), 16)
        if patch.contains(va):
            out.append(va - patch.va)
    return out
