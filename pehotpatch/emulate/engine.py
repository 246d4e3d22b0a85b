"""One emulated process ("world"): images mapped into an address space, their imports
bound to stubs, and calls through their exports with an instruction budget.

Faults are results, not crashes: an access to unmapped or protected memory, an
instruction the CPU refuses, a call into an import without a stub, or a call that does
not return within the budget ends that call with a :class:`Fault` naming the address
and the function it is in; the next call starts from a fresh stack with the memory
state the faulting call left.

Hooks: every write to a writable section of an image is recorded (attributed to the
global it lands in after the call), and while a patch is applied, execution of code
in the patch image and accesses to its writable data are checked by the guard (see
:class:`PatchGuard`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import unicorn

from pehotpatch.emulate.names import Names
from pehotpatch.emulate.results import (
    FAULT_BUDGET,
    FAULT_FETCH,
    FAULT_IMPORT,
    FAULT_INSN,
    FAULT_READ,
    FAULT_WRITE,
    CallResult,
    Fault,
    GlobalWrite,
    Location,
)
from pehotpatch.emulate.space import AddressSpace, MappedImage
from pehotpatch.emulate.stubs import ImportStubs
from pehotpatch.errors import InputError
from pehotpatch.image.machine import Machine
from pehotpatch.image.pe import PEImage

DEFAULT_BUDGET = 2_000_000  # instructions per call
STUB_PAGE = 0x40000  # 16384 stubs of 16 bytes

_READS = (unicorn.UC_MEM_READ_UNMAPPED, unicorn.UC_MEM_READ_PROT)
_WRITES = (unicorn.UC_MEM_WRITE_UNMAPPED, unicorn.UC_MEM_WRITE_PROT)


@dataclass
class Violation:
    """Something the guard saw while a patch was applied."""

    kind: str  # "code" (patch image code outside the patched functions) or "data"
    pc: int
    address: int


@dataclass
class PatchGuard:
    """While active: which code of the patch image may run, and that its writable data
    is not touched (patched code must reach the base's globals through __ref_ slots)."""

    image: MappedImage
    allowed_functions: set[int] = field(default_factory=set)  # function RVAs that may run
    allowed_blocks: set[int] = field(default_factory=set)  # RVAs (redirected entries)
    copies: set[str] = field(default_factory=set)  # names that also exist in the base
    active: bool = False


class World:
    """An address space with images, stubs and hooks; one per world of a simulation."""

    def __init__(self, machine: Machine, *, budget: int = DEFAULT_BUDGET):
        self.space = AddressSpace(machine)
        self.uc = self.space.uc
        self.abi = self.space.abi
        self.budget = budget
        self._hooks: list[int] = []
        rx = unicorn.UC_PROT_READ | unicorn.UC_PROT_EXEC
        self.stubs = ImportStubs(self.abi, self.space.alloc_misc(STUB_PAGE, rx), STUB_PAGE)
        self._hook(unicorn.UC_HOOK_BLOCK, self.stubs.hook, begin=self.stubs.base,
                   end=self.stubs.base + STUB_PAGE - 1)
        self.sentinel = self.space.alloc_misc(0x1000, rx)
        self.uc.mem_write(self.sentinel, self.abi.stub_code(0))
        self._hook(unicorn.UC_HOOK_MEM_INVALID, self._on_invalid)
        self.names: dict[str, Names] = {}
        self.guards: list[PatchGuard] = []
        self.violations: list[Violation] = []
        self._writes: list[tuple[MappedImage, int]] = []
        self._bad: tuple[int, int] | None = None

    def _hook(self, kind: int, callback: object, user: object = None, begin: int = 1,
              end: int = 0) -> None:
        self._hooks.append(self.uc.hook_add(kind, callback, user, begin, end))

    def close(self) -> None:
        """Free the emulator now (its 64 MiB of translated code and the mapped memory),
        not at the next cyclic garbage collection: unicorn's binding keeps its hook
        callbacks in a cycle.  The world is unusable afterwards."""
        for h in self._hooks:
            self.uc.hook_del(h)
        self._hooks.clear()
        release = getattr(self.uc, "_Uc__finalizer", None)  # the binding's own uc_close
        if release is not None:
            release()

    # ---- images -------------------------------------------------------------------
    def load(self, pe: PEImage, role: str, slot: int, *, pdb: str | os.PathLike[str] | None = None,
             bind_imports: bool = True) -> MappedImage:
        """Map ``pe``, bind its imports to stubs (or, for a patch image, whose IAT only
        the table's INVERSE INDIRECT records fill, to traps naming the unbound slot) and
        watch its writable sections."""
        im = self.space.map_image(pe, role, slot)
        self.names[role] = Names(pe, pdb)
        for imp in pe.imports:
            if imp.iat_rva + self.abi.ptr_size > im.size:
                continue
            try:
                if bind_imports:
                    va = self.stubs.stub(self.uc, imp)
                else:
                    fn = imp.name if imp.name is not None else f"#{imp.ordinal}"
                    va = self.stubs.trap(self.uc, f"{role} IAT slot {imp.dll}!{fn} "
                                                  "(never bound by an INVERSE INDIRECT record)")
            except OverflowError:
                raise InputError("too many imports to stub", pe.path) from None
            self.uc.mem_write(im.va + imp.iat_rva, va.to_bytes(self.abi.ptr_size, "little"))
        for s in pe.sections:
            if s.writable and not s.executable and s.rva < im.size:
                end = min(im.va + s.rva + max(s.size, 1), im.va + im.size) - 1
                self._hook(unicorn.UC_HOOK_MEM_WRITE, self._on_write, im, begin=im.va + s.rva, end=end)
        return im

    def run_entry(self, im: MappedImage) -> CallResult | None:
        if im.pe.entry_rva == 0:
            return None
        return self.call_va(im.va + im.pe.entry_rva, [im.va, 1, 0], want_value=True)

    def export_va(self, im: MappedImage, name: str) -> int:
        for e in im.pe.exports:
            if e.name is not None and e.rva and (e.name == name or e.name.split("@")[0] == name):
                return im.va + e.rva
        raise InputError(f"no export named {name!r}", im.pe.path)

    def watch(self, guard: PatchGuard) -> None:
        """Check code run in, and data touched in, ``guard.image`` while it is active."""
        im = guard.image
        self.guards.append(guard)
        for s in im.pe.sections:
            if s.rva >= im.size:
                continue
            lo, hi = im.va + s.rva, min(im.va + s.rva + max(s.size, 1), im.va + im.size) - 1
            if s.executable:
                self._hook(unicorn.UC_HOOK_BLOCK, self._on_guard_block, guard, begin=lo, end=hi)
            elif s.writable:
                self._hook(unicorn.UC_HOOK_MEM_READ | unicorn.UC_HOOK_MEM_WRITE,
                           self._on_guard_data, guard, begin=lo, end=hi)

    # ---- calls --------------------------------------------------------------------
    def call_va(self, va: int, args: list[int], *, want_value: bool = True,
                wide: bool = False) -> CallResult:
        """Call the function at ``va`` with ``args``; the result is the return register
        (its low 32 bits unless ``wide``), or the fault that ended the call."""
        uc = self.uc
        self.abi.setup_call(uc, self.space.stack_top, self.sentinel, args)
        self._writes = []
        self._bad = None
        self.stubs.missing = None
        self.stubs.fault = None
        fault: Fault | None = None
        try:
            uc.emu_start(va, self.sentinel, count=self.budget)
        except unicorn.UcError as exc:
            fault = self._fault(exc)
        pc = int(uc.reg_read(self.abi.pc))
        if fault is None:
            if self.stubs.missing is not None:
                fault = Fault(FAULT_IMPORT, self.locate(self._caller()), f"called {self.stubs.missing}")
            elif self.stubs.fault is not None:
                fault = Fault(FAULT_WRITE, self.locate(self._caller()),
                              "an import stub was given memory it cannot use (unmapped, or too much)")
            elif pc != self.sentinel:
                fault = Fault(FAULT_BUDGET, self.locate(pc),
                              f"no return within {self.budget} instructions")
        writes = self._attribute_writes()
        if fault is not None:
            return CallResult(None, fault, writes)
        value: int | None = None
        if want_value:
            value = int(uc.reg_read(self.abi.ret))
            if not wide:
                value &= 0xFFFFFFFF
        return CallResult(value, None, writes)

    def _caller(self) -> int:
        """The return address of the stub being executed (for import faults)."""
        if self.abi.machine is Machine.ARM64:
            return int(self.uc.reg_read(unicorn.arm64_const.UC_ARM64_REG_X30))
        return self.space.read_ptr(int(self.uc.reg_read(self.abi.sp)))

    # ---- hooks --------------------------------------------------------------------
    def _on_invalid(self, uc: unicorn.Uc, access: int, address: int, size: int, value: int,
                    user: object) -> bool:
        self._bad = (access, address)
        return False

    def _on_write(self, uc: unicorn.Uc, access: int, address: int, size: int, value: int,
                  im: MappedImage) -> None:
        self._writes.append((im, address))

    def _on_guard_block(self, uc: unicorn.Uc, address: int, size: int, guard: PatchGuard) -> None:
        if not guard.active:
            return
        rva = address - guard.image.va
        if rva in guard.allowed_blocks:
            return
        f = self.names[guard.image.role].function(rva)
        if f is None or f.rva in guard.allowed_functions:
            return
        if self.names[guard.image.role].names_of(f) & guard.copies:
            self.violations.append(Violation("code", address, address))

    def _on_guard_data(self, uc: unicorn.Uc, access: int, address: int, size: int, value: int,
                       guard: PatchGuard) -> None:
        if guard.active:
            self.violations.append(Violation("data", int(uc.reg_read(self.abi.pc)), address))

    # ---- reporting ------------------------------------------------------------------
    def locate(self, va: int) -> Location:
        im = self.space.image_at(va)
        if im is None:
            if self.stubs.base <= va < self.stubs.base + STUB_PAGE:
                key = self.stubs.impls.get(va, ("import stub", None))[0]
                return Location(None, None, f"stub {key}")
            return Location(None, None, f"{va:#x}")
        rva = va - im.va
        return Location(im.role, rva, self.names[im.role].describe(rva))

    def _fault(self, exc: unicorn.UcError) -> Fault:
        pc = int(self.uc.reg_read(self.abi.pc))
        if self._bad is not None:
            access, address = self._bad
            kind = FAULT_READ if access in _READS else FAULT_WRITE if access in _WRITES else FAULT_FETCH
            return Fault(kind, self.locate(pc), str(exc), self.locate(address))
        if exc.errno in (unicorn.UC_ERR_INSN_INVALID, unicorn.UC_ERR_EXCEPTION):
            return Fault(FAULT_INSN, self.locate(pc), str(exc))
        return Fault(FAULT_FETCH, self.locate(pc), str(exc))

    def _attribute_writes(self) -> list[GlobalWrite]:
        out: list[GlobalWrite] = []
        seen: set[tuple[str, str, str | int]] = set()
        for im, va in self._writes:
            rva = va - im.va
            names = self.names[im.role]
            g = names.global_at(rva)
            section = names.section_name(rva)
            key = (im.role, section, g.name if g is not None else "")
            if key in seen:
                continue
            seen.add(key)
            out.append(GlobalWrite(im.role, section, g.name if g is not None else None,
                                   g.rva if g is not None else rva))
        return out

    def snapshot(self, im: MappedImage) -> bytes:
        return self.space.read(im.va, im.size)
