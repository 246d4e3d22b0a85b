"""Deriving the patch plan from the diff, the correlation and the hot-patch set.

The references that leave patched code come from :mod:`pehotpatch.reach` (the same facts
the HP6xx rules read); this module decides, for each, which record binds it, or refuses it
with a reason.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable

from pehotpatch.diff import DiffResult
from pehotpatch.errors import InputError
from pehotpatch.image.pe import PEImage
from pehotpatch.image.symbols import SymbolIndex
from pehotpatch.load import LoadedImage
from pehotpatch.plan.model import (
    Backward,
    CallTarget,
    DataBinding,
    Forward,
    ImageIdentity,
    ImportBinding,
    NewFunction,
    NewGlobal,
    OwnImport,
    PatchPlan,
    Refusal,
)
from pehotpatch.reach import ADDRESS, NEW, PATCHED, UNPATCHED, Reach, RefSlotRead, gather

#: IMAGE_GUARD_CF_INSTRUMENTED: the image checks indirect calls against its CFG table.
GUARD_CF_INSTRUMENTED = 0x100


def identity(li: LoadedImage | PEImage) -> ImageIdentity:
    pe = li.pe if isinstance(li, LoadedImage) else li
    return ImageIdentity(path=str(pe.path), sha256=hashlib.sha256(pe.data).hexdigest(),
                         machine=pe.machine.value, timestamp=pe.timestamp, checksum=pe.checksum,
                         size_of_image=pe.size_of_image)


def first_bytes(img: PEImage, rva: int) -> int:
    raw = img.try_read(rva, 4)
    return int.from_bytes(raw, "little") if raw is not None else 0


def require_same_machine(base: LoadedImage, new: LoadedImage) -> None:
    """Refuse a pair of different machines: no table can patch one with the other."""
    if base.pe.machine != new.pe.machine:
        raise InputError(f"the base is {base.pe.machine.value} and the intermediate {new.pe.machine.value}: a hot "
                         f"patch needs the same machine", base.path)


def build_plan(diff: DiffResult, hotpatch: Iterable[str], *, sequence: int = 1,
               allow_new_imports: bool = False) -> PatchPlan:
    """The plan for hot-patching ``diff.base`` with the patched functions of ``diff.new``
    (those of ``hotpatch`` that changed)."""
    require_same_machine(diff.base, diff.new)
    reach = gather(diff, list(hotpatch))
    plan = PatchPlan(identity(diff.base), identity(diff.new), sequence)
    _Planner(diff, reach, plan, allow_new_imports).run()
    return plan


def _at(name: str, off: int) -> str:
    return f"{name}+{off:#x}"


class _Planner:
    def __init__(self, diff: DiffResult, reach: Reach, plan: PatchPlan, allow_new_imports: bool):
        self.diff, self.reach, self.plan = diff, reach, plan
        self.allow_new_imports = allow_new_imports
        self.bix: SymbolIndex = diff.base.index
        self.nix: SymbolIndex = diff.new.index
        self.bimg, self.nimg = self.bix.image, self.nix.image
        corr = diff.correlation
        self.base_global_of = {n: b for b, n in corr.global_map.items()}
        self.base_data_of = {n: b for b, n in corr.data_map.items()}
        self.base_function_of = {p.new.rva: p.base.rva for p in corr.functions}

    def run(self) -> None:
        self._forward()
        self._backward_and_addresses()
        self._data()
        self._imports()
        self._call_targets()
        self._new_functions()
        p = self.plan
        p.forward.sort(key=lambda r: r.base_rva)
        p.backward.sort(key=lambda r: r.patch_rva)
        p.data.sort(key=lambda r: r.slot_rva)
        p.imports.sort(key=lambda r: r.patch_slot_rva)
        p.own_imports.sort(key=lambda r: r.patch_slot_rva)
        p.call_targets.sort(key=lambda r: r.patch_rva)
        p.new_globals.sort(key=lambda r: r.patch_rva)
        p.refusals = list(dict.fromkeys(p.refusals))  # one per (reference, target, reason)
        if not p.forward:
            p.notes.append("no patched function changed: the table redirects nothing")

    # ---- forward ---------------------------------------------------------------------------
    def _forward(self) -> None:
        for rf in self.reach.running:
            if rf.target_class != PATCHED:
                continue
            if rf.base_rva is None:
                self.plan.refusals.append(Refusal(rf.name, rf.name, "a patched function without a base counterpart cannot be redirected"))
                continue
            bf = self.bix.function_by_rva.get(rf.base_rva)
            self.plan.forward.append(Forward(bf.name if bf else rf.name, rf.base_rva, rf.rva,
                                             first_bytes(self.bimg, rf.base_rva)))

    # ---- calls to unpatched functions, and taken addresses ----------------------------------
    def _backward_and_addresses(self) -> None:
        users: dict[int, set[str]] = defaultdict(set)
        base_of: dict[int, int] = {}
        slot_names = {r.slot for r in self.reach.ref_reads}
        for e in self.reach.edges:
            if e.target_class != UNPATCHED or e.base_rva is None:
                continue
            where = _at(e.source, e.offset)
            if e.kind == ADDRESS:
                if e.via is not None and e.via in slot_names:
                    continue  # a __ref_ slot pointing at code: bound with the data below
                how = f"stored in {e.via}" if e.via else "an instruction operand"
                self.plan.refusals.append(Refusal(
                    where, e.target,
                    f"the address of the unpatched function {e.target} is taken ({how}); in the patch image it is "
                    f"the patch's copy, so it would compare unequal to the base's {e.target} that base code "
                    f"stores, and no record the loader applies can rebind it"))
                continue
            if e.target_rva != e.function_rva:
                self.plan.refusals.append(Refusal(where, e.target, f"a {e.kind} into the middle of the unpatched function cannot be redirected to the base"))
                continue
            users[e.function_rva].add(e.source)
            base_of[e.function_rva] = e.base_rva
        for rva in sorted(users):
            fn = self.nix.function_by_rva.get(rva)
            self.plan.backward.append(Backward(fn.name if fn else f"sub_{rva:x}", rva, base_of[rva],
                                               first_bytes(self.nimg, rva), tuple(sorted(users[rva]))))

    # ---- __ref_ slots -------------------------------------------------------------------------
    def _data(self) -> None:
        readers: dict[int, set[str]] = defaultdict(set)
        first: dict[int, RefSlotRead] = {}
        for r in self.reach.ref_reads:
            readers[r.slot_rva].add(r.source)
            first.setdefault(r.slot_rva, r)
        new_globals = {g.rva: g for g in self.diff.added_globals}
        for slot_rva in sorted(first):
            r = first[slot_rva]
            users = tuple(sorted(readers[slot_rva]))
            where = f"{r.slot} (read by {', '.join(users)})"
            t = r.target_rva
            if t is None:
                self.plan.refusals.append(Refusal(where, r.target, "the slot's contents do not point into the image"))
                continue
            if r.thread_local:
                self.plan.refusals.append(Refusal(where, r.target, "the slot points at the TLS template (.tls), not at a thread's copy of the variable; no record can bind a thread-local variable"))
                continue
            if r.target_is_code:
                fn = self.nix.function_at(t)
                b = self.base_function_of.get(fn.rva) if fn is not None else None
                if fn is None or b is None:
                    continue  # a new function's address: it stays in the patch image
                self.plan.data.append(DataBinding(r.slot, slot_rva, self._base_name(b + t - fn.rva), b + t - fn.rva, users))
                continue
            b = self._base_data(t)
            if b is not None:
                self.plan.data.append(DataBinding(r.slot, slot_rva, self._base_name(b), b, users))
                continue
            g = self.nix.global_at(t)
            if g is not None and g.rva in new_globals:
                self.plan.new_globals.append(NewGlobal(g.name, g.rva, r.slot))
                continue
            self.plan.refusals.append(Refusal(where, r.target, "the variable the slot points at has no counterpart in the base"))

    def _base_data(self, t: int) -> int | None:
        """The base RVA of the intermediate's data at ``t`` (a paired global, plus offset)."""
        if t in self.base_global_of:
            return self.base_global_of[t]
        near = self.nix.global_at(t)
        if near is None:
            for g in self.nix.globals:
                if g.size and g.rva <= t < g.rva + g.size:
                    near = g
                    break
        if near is not None and near.rva in self.base_global_of:
            return self.base_global_of[near.rva] + (t - near.rva)
        return self.base_data_of.get(t)

    def _base_name(self, b: int) -> str:
        from pehotpatch.diff import describe_target

        return describe_target(self.bix, b)

    # ---- imports ---------------------------------------------------------------------------------
    def _imports(self) -> None:
        corr = self.diff.correlation
        base_slots: dict[str, int] = {}
        for imp in self.bimg.imports:
            base_slots.setdefault(corr.import_key(imp.key), imp.iat_rva)
        users: dict[int, set[str]] = defaultdict(set)
        keys: dict[int, str] = {}
        for u in self.reach.imports:
            users[u.slot_rva].add(u.source)
            keys[u.slot_rva] = u.import_key
        for slot in sorted(keys):
            key, who = keys[slot], tuple(sorted(users[slot]))
            b = base_slots.get(key)
            if b is not None:
                self.plan.imports.append(ImportBinding(key, slot, b, who))
            elif self.allow_new_imports:
                self.plan.own_imports.append(OwnImport(key, slot, who))
            else:
                self.plan.refusals.append(Refusal(f"{key} (used by {', '.join(who)})", key, "the base does not import it; allow new imports to resolve it through the patch image's own IAT"))

    # ---- CFG -----------------------------------------------------------------------------------------
    def _call_targets(self) -> None:
        blc, nlc = self.bimg.load_config, self.nimg.load_config
        if blc is None or nlc is None:
            return
        if not ((blc.guard_flags or 0) & GUARD_CF_INSTRUMENTED and (nlc.guard_flags or 0) & GUARD_CF_INSTRUMENTED):
            return
        valid = set(blc.cfg_functions)
        for f in self.plan.forward:
            if f.base_rva in valid:
                self.plan.call_targets.append(CallTarget(f.function, f.patch_rva, f.base_rva))

    def _new_functions(self) -> None:
        for rf in self.reach.running:
            if rf.target_class == NEW:
                self.plan.new_functions.append(NewFunction(rf.name, rf.rva, rf.reached_by, rf.reached_how))
