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

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pehotpatch.emulate.abi import PAGE
from pehotpatch.emulate.calls import Buffer, Call, parse_call, return_kind
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
    PatchReport,
    SimulationResult,
)
from pehotpatch.emulate.space import SCRATCH_SIZE, MappedImage
from pehotpatch.errors import InputError, UsageError
from pehotpatch.image.pe import PEImage
from pehotpatch.image.pe_reader import load_pe

PathLike = str | os.PathLike[str]
MAX_CALLS = 10_000


@dataclass(frozen=True)
class _Input:
    """An image of the simulation with its PDB (None: found next to it) and its name."""

    pe: PEImage
    pdb: PathLike | None
    label: str


def simulate(base: PathLike, final: PathLike, calls: Sequence[str], *, patch_after: int = 0,
             then: PathLike | None = None, undo: bool = False, budget: int = DEFAULT_BUDGET,
             pdb_base: PathLike | None = None, pdb_final: PathLike | None = None,
             pdb_then: PathLike | None = None) -> SimulationResult:
    """Run ``calls`` (``"name(1, 2)"``) through the base's exports before and after
    applying ``final``'s hot-patch table, and through the final image alone."""
    b = _Input(load_pe(base), pdb_base, str(base))
    patches = [_Input(load_pe(final), pdb_final, str(final))]
    if then is not None:
        patches.append(_Input(load_pe(then), pdb_then, str(then)))
    for p in patches:
        if p.pe.machine is not b.pe.machine:
            raise InputError(f"machine {p.pe.machine.value} does not match the base's "
                             f"{b.pe.machine.value}", p.pe.path)
        if not has_table(p.pe):
            raise InputError("not a final image: it carries no hot-patch table "
                             "(HotPatchTableOffset is 0 or there is no load config)", p.pe.path)
    if len(calls) > MAX_CALLS:
        raise UsageError(f"more than {MAX_CALLS} calls")
    parsed = [parse_call(c, 8 * b.pe.machine.pointer_size) for c in calls]
    if not 0 <= patch_after <= len(parsed):
        raise UsageError(f"--patch-after {patch_after}: there are {len(parsed)} calls")
    if budget <= 0:
        raise UsageError("the instruction budget must be positive")
    scratch = sum(-(-b.size // PAGE) * PAGE + PAGE for c in parsed for b in c.buffers)
    if scratch > SCRATCH_SIZE:
        raise UsageError(f"the calls' buffers need {scratch:#x} bytes of address space, more than the "
                         f"{SCRATCH_SIZE // (1 << 20)} MiB of the simulation's scratch area")

    result = SimulationResult(b.pe.machine.value, str(base), str(final), patch_after)
    worlds: list[World] = []
    try:
        alone = _Standalone(b, "base", budget, worlds)
        ref = _Standalone(patches[-1], "intermediate", budget, worlds)
        kinds = _return_kinds(parsed, (alone, ref))
        base_results = alone.run(parsed, kinds)
        ref_results = ref.run(parsed, kinds)
        world = World(b.pe.machine, budget=budget)
        worlds.append(world)
        patched_results, patcher = _run_patched(world, b, patches, parsed, patch_after, result, kinds)
        _compare(result, parsed, base_results, patched_results, ref_results)
        if undo and any(p.applied for p in result.patches):
            result.undo = patcher.undo()
            if not result.undo.identical:
                result.findings.append(Finding(
                    F_UNDO, f"after undo {len(result.undo.differences)} or more bytes of the base "
                    f"differ from before patching (first at RVA {result.undo.differences[0]:#x})"))
        for role, names in world.names.items():
            result.notes += [f"{role}: {n}" for n in names.notes]
        return result
    finally:
        for w in worlds:
            w.close()


def _run_patched(world: World, base: _Input, patches: list[_Input], parsed: list[Call],
                 patch_after: int, result: SimulationResult,
                 kinds: dict[str, str]) -> tuple[list[CallResult], Patcher]:
    """The base running; the patches applied after ``patch_after`` calls."""
    b = world.load(base.pe, "base", 0, pdb=base.pdb)
    _entry(world, b, result, "base")
    patcher = Patcher(world, b)
    out: list[CallResult] = []
    seen: set[tuple[str, str]] = set()
    for i in range(len(parsed) + 1):
        if i == patch_after:
            for n, p in enumerate(patches, 1):
                _apply(world, patcher, p, "patch" if n == 1 else f"patch{n}", n, result)
        if i == len(parsed):
            break
        before = len(world.violations)
        out.append(_call(world, b, parsed[i], kinds[parsed[i].name]))
        _guard_findings(world, before, i, parsed[i], result, seen)
    return out, patcher


def _compare(result: SimulationResult, parsed: list[Call], base_results: list[CallResult],
             patched_results: list[CallResult], ref_results: list[CallResult]) -> None:
    """One row per call; after patching, a fault the intermediate does not have is a
    finding, and so is any difference when the patch came before the first call."""
    applied = any(p.applied for p in result.patches)
    k = result.patch_after
    for i, c in enumerate(parsed):
        phase = "after" if applied and i >= k else "before"
        pr, rr = patched_results[i], ref_results[i]
        result.calls.append(CallRow(i, c.text, phase, base_results[i], pr, rr))
        if phase != "after":
            continue
        if pr.fault is not None and rr.fault is None:
            result.findings.append(Finding(F_FAULT, f"{c.text}: {pr.fault.text()}", i))
        elif k == 0 and pr.outcome() != rr.outcome():
            result.findings.append(Finding(
                F_MISMATCH, f"{c.text}: patched base gives {pr.outcome()}, the intermediate "
                f"{rr.outcome()}", i))


class _Standalone:
    """One image alone in its own world (the base, or a final image as the intermediate)."""

    def __init__(self, image: _Input, role: str, budget: int, worlds: list[World]):
        self.world = World(image.pe.machine, budget=budget)
        worlds.append(self.world)
        self.image = self.world.load(image.pe, role, 0 if role == "base" else 1, pdb=image.pdb)
        self.world.run_entry(self.image)

    def run(self, calls: list[Call], kinds: dict[str, str]) -> list[CallResult]:
        return [_call(self.world, self.image, c, kinds[c.name]) for c in calls]


def _return_kinds(calls: list[Call], worlds: Sequence[_Standalone]) -> dict[str, str]:
    """How each called export's result is read (see :func:`return_kind`), decided once for
    all worlds: from the first image whose PDB gives the export a signature (the base's,
    then the final image's), else the low 32 bits.  Reading it per world would make a
    64-bit result compare unequal when only one image has a PDB."""
    out: dict[str, str] = {}
    for c in calls:
        if c.name in out:
            continue
        out[c.name] = "int"
        for w in worlds:
            va = w.world.export_va(w.image, c.name)
            f = w.world.names[w.image.role].function(va - w.image.va)
            if f is not None and f.signature:
                out[c.name] = return_kind(f.signature, c.name)
                break
    return out


def _entry(world: World, im: MappedImage, result: SimulationResult, what: str) -> None:
    r = world.run_entry(im)
    if r is not None and r.fault is not None:
        result.notes.append(f"{what} DllMain: {r.fault.text()}")


def _call(world: World, im: MappedImage, c: Call, kind: str | None = None) -> CallResult:
    """``c`` in ``world`` through ``im``'s export; ``kind``: how to read the result (None:
    from ``im``'s own PDB)."""
    va = world.export_va(im, c.name)
    if kind is None:
        f = world.names[im.role].function(va - im.va)
        kind = return_kind(f.signature if f is not None else None, c.name)
    args: list[int] = []
    placed: list[tuple[int, int]] = []  # (va, size) of each buffer argument
    for a in c.args:
        if isinstance(a, Buffer):
            data = a.content()
            placed.append((world.space.alloc_buffer(data), len(data)))
            args.append(placed[-1][0])
        else:
            args.append(a)
    r = world.call_va(va, args, want_value=kind != "void", wide=kind == "wide")
    r.buffers = [hashlib.blake2b(world.space.read(bva, n), digest_size=8).hexdigest() for bva, n in placed]
    return r


def _apply(world: World, patcher: Patcher, p: _Input, role: str, slot: int,
           result: SimulationResult) -> None:
    im = world.load(p.pe, role, slot, pdb=p.pdb, bind_imports=False)
    findings: list[Finding] = []
    try:
        table = read_table(p.pe)
    except TableRefused as exc:
        report = PatchReport(p.label, role, 0, False, refused=str(exc))
    else:
        report, findings = patcher.apply(im, table, p.label)
    result.patches.append(report)
    if report.refused:
        result.findings.append(Finding(F_REFUSED, f"{Path(p.label).name}: the loader would refuse "
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
            names = world.names[im.role]
            g = names.global_at(addr.rva or 0)
            if g is not None and names.is_new_global(g, world.names["base"]):
                note = (f"{c.text}: {pc.text()} used {names.plain(g.name)}, a global the base does not have: "
                        "it lives in the patch image and started from its initialiser (HP404)")
                if ("new", g.name) not in seen:
                    seen.add(("new", g.name))
                    result.notes.append(note)
                continue
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
