"""Applying a final image's table to the running base, the way the Windows loader does
(docs/FORMAT.md, docs/SIMULATE.md), and taking it back.

Order: every check first (the base's identity, the sequence number, each record's
extent, the recorded first bytes of every redirected function), so a refused table
changes nothing; then the INVERSE chunks into the patch image (ABSOLUTE: the ``__ref_``
slots, INDIRECT: the IAT copies, FUNCTION: the backward redirections, CALL_TARGET:
nothing to write); then the functions the previous patch redirected and this one does
not are restored (supersede); then the FUNCTION chunks into the base.

A redirection takes an 8-byte slot in a Hotpatch Address Table (HPAT) area allocated
near the redirected image: on x86/x64 a stub ``jmp [ptr]`` with its pointer in the
following page, ``E9 rel32`` to the stub at function-5 and ``EB F9`` at the function
(written last); on ARM64 ``B stub`` at the function and a 16-byte stub
``LDR X16, #8; BR X16; .quad target``.  The bytes a redirection overwrites are kept
for undo.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import unicorn

from pehotpatch.emulate.abi import PAGE
from pehotpatch.emulate.audit import audit
from pehotpatch.emulate.engine import PatchGuard, World
from pehotpatch.emulate.hptable import (
    ABSOLUTE,
    CALL_TARGET,
    FUNCTION,
    INDIRECT,
    TableRefused,
    check_against,
)
from pehotpatch.emulate.results import Finding, PatchReport, Redirect, UndoReport
from pehotpatch.emulate.space import MappedImage
from pehotpatch.image.machine import Machine
from pehotpatch.table.model import HotPatchTable, Record

AREA_PAIRS = 8  # code/pointer page pairs per HPAT area


@dataclass
class Slot:
    stub: int
    ptr: int


@dataclass
class HpatArea:
    va: int
    pairs: int
    used: int = 0


@dataclass
class Saved:
    """A redirected function: its slot and the bytes the redirection replaced."""

    func: int  # VA
    offset: int
    original: bytes
    slot: Slot
    name: str


@dataclass
class Patcher:
    world: World
    base: MappedImage
    areas: dict[str, list[HpatArea]] = field(default_factory=dict)
    forward: dict[int, Saved] = field(default_factory=dict)  # base function VA -> saved
    backward: list[Saved] = field(default_factory=list)
    sequence: int = 0
    snapshot: bytes | None = None
    guard: PatchGuard | None = None

    # ---- HPAT ---------------------------------------------------------------------
    def _slot(self, im: MappedImage) -> Slot:
        per_page = PAGE // self.world.abi.slot_size
        arm = self.world.abi.machine is Machine.ARM64
        for area in self.areas.get(im.role, []):
            if area.used < area.pairs * per_page:
                break
        else:
            pairs = AREA_PAIRS
            size = pairs * PAGE * (1 if arm else 2)
            va = self.world.space.alloc_near(im, size, unicorn.UC_PROT_READ | unicorn.UC_PROT_EXEC)
            area = HpatArea(va, pairs)
            self.areas.setdefault(im.role, []).append(area)
        i = area.used
        area.used += 1
        page, off = divmod(i, per_page)
        stub = area.va + page * PAGE * (1 if arm else 2) + off * self.world.abi.slot_size
        return Slot(stub, stub + 8 if arm else stub + PAGE)

    def _set_target(self, slot: Slot, target: int) -> None:
        code, ptr, data = self.world.abi.hpat_stub(slot.stub, target)
        self.world.space.write(slot.stub, code)
        self.world.space.write(ptr, data)

    def _redirect(self, im: MappedImage, func: int, target: int, name: str) -> Saved:
        off, n = self.world.abi.redirect_extent()
        original = self.world.space.read(func + off, n)
        slot = self._slot(im)
        self._set_target(slot, target)
        for va, data in self.world.abi.redirect_writes(func, slot.stub):
            self.world.space.write(va, data)
        return Saved(func, off, original, slot, name)

    def _restore(self, saved: Saved) -> None:
        # the entry first (x86/x64: EB F9 -> original), then the rest of the extent
        entry = -saved.offset
        self.world.space.write(saved.func, saved.original[entry:entry + 2])
        self.world.space.write(saved.func + saved.offset, saved.original)

    def _first_bytes(self, func: int) -> bytes:
        """A function's own first two bytes (before any redirection of ours)."""
        saved = self.forward.get(func)
        if saved is not None:
            return saved.original[-saved.offset:-saved.offset + 2]
        return self.world.space.read(func, 2)

    # ---- apply --------------------------------------------------------------------
    def apply(self, patch: MappedImage, table: HotPatchTable, final: str) -> tuple[PatchReport, list[Finding]]:
        report = PatchReport(final, patch.role, table.sequence, False)
        for c in table.chunks:
            report.records[c.type_name] = report.records.get(c.type_name, 0) + len(c.records)
        try:
            self._check(patch, table)
        except TableRefused as exc:
            report.refused = str(exc)
            return report, []
        if self.snapshot is None:
            self.snapshot = self.world.snapshot(self.base)
        base_names = self.world.names[self.base.role]
        patch_names = self.world.names[patch.role]
        space = self.world.space
        guard = PatchGuard(patch)
        for c in table.chunks:
            if not c.inverse:
                continue
            for r in c.records:
                if c.type == ABSOLUTE:
                    ptr = (self.base.va + r.target).to_bytes(space.abi.ptr_size, "little")
                    space.write(patch.va + r.site, ptr)
                elif c.type == INDIRECT:
                    value = space.read_ptr(self.base.va + r.target)
                    space.write(patch.va + r.site, value.to_bytes(space.abi.ptr_size, "little"))
                elif c.type == FUNCTION:
                    name = base_names.describe(r.target)
                    saved = self._redirect(patch, patch.va + r.site, self.base.va + r.target, name)
                    self.backward.append(saved)
                    guard.allowed_blocks.update({r.site, r.site - 5})
                    report.redirects.append(Redirect("backward", name, r.site, r.target, patch.role))
                elif c.type == CALL_TARGET:
                    pass  # a CFG bitmap change: nothing in memory to write here
        new_sites = {self.base.va + r.site for r in table_records(table, FUNCTION, False)}
        for func in sorted(self.forward):
            if func not in new_sites:
                saved = self.forward.pop(func)
                self._restore(saved)
                report.restored.append(saved.name)
        for r in table_records(table, FUNCTION, False):
            func = self.base.va + r.site
            name = base_names.describe(r.site)
            target = patch.va + r.target
            if func in self.forward:
                self._set_target(self.forward[func].slot, target)  # superseding: same slot
            else:
                self.forward[func] = self._redirect(self.base, func, target, name)
            f = patch_names.function(r.target)
            guard.allowed_functions.add(f.rva if f is not None else r.target)
            report.redirects.append(Redirect("forward", name, r.site, r.target, self.base.role))
        self.sequence = table.sequence
        report.applied = True
        if self.guard is not None:
            self.guard.active = False
        guard.copies = base_names.function_names
        self.world.watch(guard)
        guard.active = True
        self.guard = guard
        return report, audit(self.world, self.base, patch, table)

    def _check(self, patch: MappedImage, table: HotPatchTable) -> None:
        check_against(table, self.base.pe, patch.pe)
        if table.sequence <= self.sequence:
            raise TableRefused(f"SequenceNumber {table.sequence} is not above the applied patch's "
                               f"{self.sequence}")
        if table.extra_words < 1:
            return
        for c in table.chunks:
            if c.type != FUNCTION:
                continue
            site_im = patch if c.inverse else self.base
            for r in c.records:
                have = self._first_bytes(site_im.va + r.site)
                want = (r.extra[0] & 0xFFFF).to_bytes(2, "little")
                if have != want:
                    fname = self.world.names[site_im.role].describe(r.site)
                    raise TableRefused(
                        f"{c.type_name} record for {site_im.role} {fname}: recorded first bytes "
                        f"{want.hex(' ')}, the function starts with {have.hex(' ')} "
                        "(STATUS_CONFLICTING_ADDRESSES)")

    # ---- undo ---------------------------------------------------------------------
    def undo(self) -> UndoReport:
        n = len(self.forward)
        for func in sorted(self.forward):
            self._restore(self.forward[func])
        self.forward.clear()
        if self.guard is not None:
            self.guard.active = False
        self.sequence = 0
        if self.snapshot is None:
            return UndoReport(True, 0)
        now = self.world.snapshot(self.base)
        diffs: list[int] = []
        for lo, hi in fixed_ranges(self.base):
            if now[lo:hi] != self.snapshot[lo:hi]:
                diffs += [rva for rva in range(lo, hi) if now[rva] != self.snapshot[rva]]
        return UndoReport(not diffs, n, diffs[:64])


def table_records(table: HotPatchTable, rtype: int, inverse: bool) -> list[Record]:
    return table.records(rtype, inverse=inverse)


def fixed_ranges(im: MappedImage) -> list[tuple[int, int]]:
    """The parts of an image that running code does not change: headers and every
    section that is not writable (RVA ranges)."""
    out = [(0, min(im.pe.size_of_headers, im.size))]
    for s in im.pe.sections:
        if not s.writable and s.rva < im.size:
            out.append((s.rva, min(s.rva + s.size, im.size)))
    return out
