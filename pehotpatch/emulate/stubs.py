"""Import stubs: the few Windows API functions the emulated images may call.

Every IAT slot of a mapped image is bound to a stub: a one-instruction function
(``ret``; ``ret N`` for x86 stdcall) whose result Python sets when execution reaches it.
The stubs are deterministic so that the three worlds of a simulation see the same
values: a tick counter that advances by 16 per call, a performance counter that
advances by 1000 per call at 10 MHz.  A slot whose function has no stub is bound to a
trap: calling it stops the call with a finding naming the import, never a crash.

The set (matched by function name in kernel32.dll, kernelbase.dll and the
``api-ms-win-core-*`` API sets) is listed in :data:`STUBS` and in docs/SIMULATE.md; the C
runtime's memory, string and heap functions are in :mod:`pehotpatch.emulate.crt`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import unicorn

from pehotpatch.emulate.abi import Abi
from pehotpatch.emulate.crt import CRT, Ctx, Heap, StubFault, is_crt_dll
from pehotpatch.image.pe import Import


@dataclass
class ApiState:
    """The state the stubs keep, one per world."""

    ticks: int = 0x10000
    counter: int = 1_000_000
    last_error: int = 0
    slept_ms: int = 0
    heap: Heap | None = None  # made at the first C runtime call


Impl = Callable[[ApiState, Callable[[int], int], Callable[[int, bytes], None]], int | None]


def _get_tick_count(st: ApiState, arg: Callable[[int], int], wr: Callable[[int, bytes], None]) -> int:
    st.ticks += 16
    return st.ticks & 0xFFFFFFFF


def _get_tick_count64(st: ApiState, arg: Callable[[int], int], wr: Callable[[int, bytes], None]) -> int:
    st.ticks += 16
    return st.ticks


def _qpc(st: ApiState, arg: Callable[[int], int], wr: Callable[[int, bytes], None]) -> int:
    st.counter += 1000
    wr(arg(0), st.counter.to_bytes(8, "little"))
    return 1


def _qpf(st: ApiState, arg: Callable[[int], int], wr: Callable[[int, bytes], None]) -> int:
    wr(arg(0), (10_000_000).to_bytes(8, "little"))
    return 1


def _sleep(st: ApiState, arg: Callable[[int], int], wr: Callable[[int, bytes], None]) -> None:
    ms = arg(0) & 0xFFFFFFFF
    st.slept_ms += ms
    st.ticks += ms
    return None


def _get_last_error(st: ApiState, arg: Callable[[int], int], wr: Callable[[int, bytes], None]) -> int:
    return st.last_error


def _set_last_error(st: ApiState, arg: Callable[[int], int], wr: Callable[[int, bytes], None]) -> None:
    st.last_error = arg(0) & 0xFFFFFFFF
    return None


def _const(v: int) -> Impl:
    def impl(st: ApiState, arg: Callable[[int], int], wr: Callable[[int, bytes], None]) -> int:
        return v
    return impl


# name -> (argument count, implementation)
STUBS: dict[str, tuple[int, Impl]] = {
    "GetTickCount": (0, _get_tick_count),
    "GetTickCount64": (0, _get_tick_count64),
    "QueryPerformanceCounter": (1, _qpc),
    "QueryPerformanceFrequency": (1, _qpf),
    "Sleep": (1, _sleep),
    "GetLastError": (0, _get_last_error),
    "SetLastError": (1, _set_last_error),
    "GetCurrentThreadId": (0, _const(0x104)),
    "GetCurrentProcessId": (0, _const(0x100)),
}
STUB_DLLS = ("kernel32.dll", "kernelbase.dll")


def stub_for(imp: Import) -> tuple[int, Impl] | tuple[int, Callable[[Ctx], int | None], str] | None:
    """(argument count, implementation) of a Windows API stub, (count, implementation,
    "crt") of a C runtime one (cdecl), or None."""
    dll = imp.dll.lower()
    if imp.name is None:
        return None
    if is_crt_dll(dll):
        crt = CRT.get(imp.name)
        return None if crt is None else (crt[0], crt[1], "crt")
    if not (dll in STUB_DLLS or dll.startswith("api-ms-win-core-")):
        return None
    return STUBS.get(imp.name)


@dataclass
class ImportStubs:
    """The stub page of one address space and the binding of every IAT slot to it."""

    abi: Abi
    base: int  # the stub page
    size: int
    state: ApiState = field(default_factory=ApiState)
    by_key: dict[str, int] = field(default_factory=dict)  # import key -> stub address
    impls: dict[int, tuple[str, Impl | None]] = field(default_factory=dict)
    crt: dict[int, Callable[[Ctx], int | None]] = field(default_factory=dict)  # stub -> C runtime impl
    next: int = 0
    missing: str | None = None  # set when a call reached a trap: what it called, and why it stops
    fault: int | None = None  # set when a stub wrote to unmapped memory

    def stub(self, uc: unicorn.Uc, imp: Import) -> int:
        key = f"{imp.dll}!{imp.name if imp.name is not None else f'#{imp.ordinal}'}"
        if key.lower() in self.by_key:
            return self.by_key[key.lower()]
        spec = stub_for(imp)
        if spec is None:
            return self.trap(uc, f"{key}, which simulate has no stub for")
        nargs = spec[0]
        cdecl = len(spec) == 3
        code = self.abi.stub_code(4 * nargs if self.abi.ptr_size == 4 and not cdecl else 0)
        if self.next + 16 > self.size:
            raise OverflowError("import stub page is full")
        va = self.base + self.next
        self.next += 16
        uc.mem_write(va, code)
        self.by_key[key.lower()] = va
        if len(spec) == 3:
            self.crt[va] = spec[1]  # type: ignore[assignment]
            self.impls[va] = (key, None)
        else:
            self.impls[va] = (key, spec[1])  # type: ignore[misc]
        return va

    def trap(self, uc: unicorn.Uc, label: str) -> int:
        """A stub that stops the call with a finding naming ``label``."""
        if label.lower() in self.by_key:
            return self.by_key[label.lower()]
        if self.next + 16 > self.size:
            raise OverflowError("import stub page is full")
        va = self.base + self.next
        self.next += 16
        uc.mem_write(va, self.abi.stub_code(0))
        self.by_key[label.lower()] = va
        self.impls[va] = (label, None)
        return va

    def hook(self, uc: unicorn.Uc, address: int, size: int, user: object) -> None:
        entry = self.impls.get(address)
        if entry is None:
            return
        key, impl = entry
        crt = self.crt.get(address)
        if crt is not None:
            if self.state.heap is None:
                self.state.heap = Heap(self.abi.machine)
            try:
                got = crt(Ctx(uc, lambda i: self.abi.arg(uc, i), self.state.heap, self.abi.ptr_size))
            except (unicorn.UcError, StubFault):
                self.fault = address
                uc.emu_stop()
                return
            if got is not None:
                uc.reg_write(self.abi.ret, got)
            return
        if impl is None:
            self.missing = key
            uc.emu_stop()
            return

        def wr(va: int, data: bytes) -> None:
            uc.mem_write(va, data)

        try:
            result = impl(self.state, lambda i: self.abi.arg(uc, i), wr)
        except unicorn.UcError:
            self.fault = address
            uc.emu_stop()
            return
        if result is not None:
            uc.reg_write(self.abi.ret, result)
