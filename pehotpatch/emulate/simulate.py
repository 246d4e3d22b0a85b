"""``pehp simulate``: the same calls in three worlds, and what the patch did.

- **base**: the base image alone (its DllMain run first, as the loader does);
- **patched**: the base running, the final image mapped as its patch, the table applied
  between call K and K+1 (``patch_after``; 0 patches before the first call), then
  optionally a second, cumulative patch (``then``) and ``undo``;
- **intermediate**: the final image alone (the intermediate's code; with ``then``, the
  second final image).

Findings (each one makes the simulation fail): the loader would refuse the table; a
FUNCTION record joins two differently named functions; a ``__ref_`` slot still points
into the patch image; after patching, code touched a writable global of the patch image
or ran the patch image's copy of a function that has a counterpart in the base (a
missing backward redirection); a call faulted or ran away after patching where the
intermediate did not; when patched before the first call, a call's result differs
from the intermediate's; after undo the base's code and read-only data differ from
before patching.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from pehotpatch.emulate.calls import Call, parse_call, return_kind
from pehotpatch.emulate.engine import DEFAULT_BUDGET, World
from pehotpatch.emulate.hptable import TableRefused, has_table, read_table
from pehotpatch.emulate.patcher import Patcher
from pehotpatch.emulate.results import (
    F_FAULT,
    F_MISMATCH,
    F_MISSING_BACKWARD,
    F_PATCH_STATE,
    F_REFUSED,
    F_UNDO,
    CallResult,
    CallRow,
    Finding,
    SimulationResult,
)
from pehotpatch.emulate.space import MappedImage
from pehotpatch.errors import InputError, UsageError
from pehotpatch.image.pe import PEImage
from pehotpatch.image.pe_reader import load_pe

PathLike = str | os.PathLike[str]
MAX_CALLS = 10_000


def simulate(base: PathLike, final: PathLike, calls: Sequence[str], *, patch_after: int = 0,
             then: PathLike | None = None, undo: bool = False, budget: int = DEFAULT_BUDGET,
             pdb_base: PathLike | None = None, pdb_final: PathLike | None = None,
             pdb_then: PathLike | None = None) -> SimulationResult:
    """Run ``calls`` (``"name(1, 2)"``) through the base's exports before and after
    applying ``final``'s hot-patch table, and through the final image alone."""
    base_pe, final_pe = load_pe(base), load_pe(final)
    then_pe = load_pe(then) if then is not None else None
    for pe in (final_pe, then_pe):
        if pe is not None and pe.machine is not base_pe.machine:
            raise InputError(f"machine {pe.machine.value} does not match the base's "
                             f"{base_pe.machine.value}", pe.path)
        if pe is not None and not has_table(pe):
            raise InputError("not a final image: it carries no hot-patch table "
                             "(HotPatchTableOffset is 0 or there is no load config)", pe.path)
    if len(calls) > MAX_CALLS:
        raise UsageError(f"more than {MAX_CALLS} calls")
    parsed = [parse_call(c, 8 * base_pe.machine.pointer_size) for c in calls]
    if not 0 <= patch_after <= len(parsed):
        raise UsageError(f"--patch-after {patch_after}: there are {len(parsed)} calls")
    if budget <= 0:
        raise UsageError("the instruction budget must be positive")

    result = SimulationResult(base_pe.machine.value, str(base), str(final), patch_after)
    worlds: list[World] = []
    try:
        return _run(result, base_pe, final_pe, then_pe, parsed, worlds, patch_after=patch_after,
                    undo=undo, budget=budget, labels=(str(final), str(then)),
                    pdbs=(pdb_base, pdb_final, pdb_then))
    finally:
        for w in worlds:
            w.close()


def _run(result: SimulationResult, base_pe: PEImage, final_pe: PEImage, then_pe: PEImage | None,
         parsed: list[Call], worlds: list[World], *, patch_after: int, undo: bool, budget: int,
         labels: tuple[str, str], pdbs: tuple[PathLike | None, PathLike | None, PathLike | None]
         ) -> SimulationResult:
    pdb_base, pdb_final, pdb_then = pdbs
    final, then = labels
    ref_pe, ref_pdb = (then_pe, pdb_then) if then_pe is not None else (final_pe, pdb_final)
    base_world = _Standalone(base_pe, "base", pdb_base, budget, worlds)
    ref_world = _Standalone(ref_pe, "intermediate", ref_pdb, budget, worlds)
    base_results = [base_world.call(c) for c in parsed]
    ref_results = [ref_world.call(c) for c in parsed]

    world = World(base_pe.machine, budget=budget)
    worlds.append(world)
    b = world.load(base_pe, "base", 0, pdb=pdb_base)
    _entry(world, b, result, "base")
    patcher = Patcher(world, b)
    patches = [(final_pe, "patch", 1, pdb_final, final)]
    if then_pe is not None:
        patches.append((then_pe, "patch2", 2, pdb_then, then))
    patched_results: list[CallResult] = []
    seen: set[tuple[str, str]] = set()
    for i in range(len(parsed) + 1):
        if i == patch_after:
            for pe, role, slot, pdb, label in patches:
                _apply(world, patcher, pe, role, slot, pdb, label, result)
        if i == len(parsed):
            break
        before = len(world.violations)
        patched_results.append(_call(world, b, parsed[i]))
        _guard_findings(world, before, i, parsed[i], result, seen)

    applied = any(p.applied for p in result.patches)
    for i, c in enumerate(parsed):
        phase = "after" if applied and i >= patch_after else "before"
        result.calls.append(CallRow(i, c.text, phase, base_results[i], patched_results[i],
                                    ref_results[i]))
        if phase != "after":
            continue
        pr, rr = patched_results[i], ref_results[i]
        if pr.fault is not None and rr.fault is None:
            result.findings.append(Finding(F_FAULT, f"{c.text}: {pr.fault.text()}", i))
        elif patch_after == 0 and pr.outcome() != rr.outcome():
            result.findings.append(Finding(
                F_MISMATCH, f"{c.text}: patched base gives {pr.outcome()}, the intermediate "
                f"{rr.outcome()}", i))
    if undo and applied:
        result.undo = patcher.undo()
        if not result.undo.identical:
            result.findings.append(Finding(
                F_UNDO, f"after undo {len(result.undo.differences)} or more bytes of the base "
                f"differ from before patching (first at RVA {result.undo.differences[0]:#x})"))
    for role, names in world.names.items():
        result.notes += [f"{role}: {n}" for n in names.notes]
    return result


class _Standalone:
    """One image alone in its own world (base, or the final image as the intermediate)."""

    def __init__(self, pe: PEImage, role: str, pdb: PathLike | None, budget: int,
                 worlds: list[World]):
        self.world = World(pe.machine, budget=budget)
        worlds.append(self.world)
        self.image = self.world.load(pe, role, 0 if role == "base" else 1, pdb=pdb)
        self.world.run_entry(self.image)

    def call(self, c: Call) -> CallResult:
        return _call(self.world, self.image, c)


def _entry(world: World, im: MappedImage, result: SimulationResult, what: str) -> None:
    r = world.run_entry(im)
    if r is not None and r.fault is not None:
        result.notes.append(f"{what} DllMain: {r.fault.text()}")


def _call(world: World, im: MappedImage, c: Call) -> CallResult:
    va = world.export_va(im, c.name)
    f = world.names[im.role].function(va - im.va)
    kind = return_kind(f.signature if f is not None else None, c.name)
    return world.call_va(va, list(c.args), want_value=kind != "void", wide=kind == "wide")


def _apply(world: World, patcher: Patcher, pe: PEImage, role: str, slot: int,
           pdb: PathLike | None, label: str, result: SimulationResult) -> None:
    im = world.load(pe, role, slot, pdb=pdb, bind_imports=False)
    try:
        table = read_table(pe)
    except TableRefused as exc:
        from pehotpatch.emulate.results import PatchReport

        report = PatchReport(label, role, 0, False, refused=str(exc))
        findings: list[Finding] = []
    else:
        report, findings = patcher.apply(im, table, label)
    result.patches.append(report)
    if report.refused:
        result.findings.append(Finding(F_REFUSED, f"{Path(label).name}: the loader would refuse "
                                                  f"the table: {report.refused}"))
    result.findings += findings


def _guard_findings(world: World, before: int, i: int, c: Call, result: SimulationResult,
                    seen: set[tuple[str, str]]) -> None:
    for v in world.violations[before:]:
        pc = world.locate(v.pc)
        if v.kind == "code":
            key = ("code", pc.where.split("+")[0])
            msg = (f"{c.text}: the patch image's copy of {key[1]} ran (no backward redirection "
                   "to the base's)")
            kind = F_MISSING_BACKWARD
        else:
            addr = world.locate(v.address)
            im = world.space.image_at(v.address)
            if im is None or _plumbing(im, addr.rva or 0, world):
                continue
            g = world.names[im.role].global_at(addr.rva or 0)
            what = g.name if g is not None else addr.where
            key = ("data", f"{pc.image}:{pc.where.split('+')[0]} {what}")
            msg = (f"{c.text}: {pc.text()} accessed {what} in the {addr.image} image, not the "
                   "base's (a __ref_ slot not bound to the base)")
            kind = F_PATCH_STATE
        if key not in seen:
            seen.add(key)
            result.findings.append(Finding(kind, msg, i))


def _plumbing(im: MappedImage, rva: int, world: World) -> bool:
    """Whether ``rva`` of a patch image is hot-patch plumbing that patched code reads in
    its own image by design: a ``__ref_`` slot or an IAT slot (in case a linker put them
    in a writable section)."""
    ptr = world.abi.ptr_size
    if any(imp.iat_rva <= rva < imp.iat_rva + ptr for imp in im.pe.imports):
        return True
    g = world.names[im.role].global_at(rva)
    return g is not None and g.is_ref_slot
