"""What differs between x64, x86 and ARM64 in the emulator: the unicorn CPU, the calling
convention used to call an export, the code of import stubs and the bytes the loader
writes when it redirects a function through its Hotpatch Address Table (HPAT).

Calling conventions: x64 Microsoft ABI (RCX, RDX, R8, R9, then the stack above 32
bytes of shadow space), x86 cdecl/stdcall (arguments on the stack; the caller resets
ESP after every call, so the two need no distinction), ARM64 AAPCS64 (X0..X7, return
address in X30).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import unicorn
from unicorn import arm64_const as a64
from unicorn import x86_const as x86

from pehotpatch.image.machine import Machine

PAGE = 0x1000
# One HPAT slot: 8 bytes of stub code in the code page; on x86/x64 the target pointer
# is at the same offset of the following page (jmp [rip+0xFFA] / jmp [abs32]).
HPAT_SLOT = 8
ARM64_HPAT_SLOT = 16  # LDR X16, #8; BR X16; .quad target


@dataclass(frozen=True)
class Abi:
    machine: Machine
    arch: int
    mode: int
    pc: int
    sp: int
    ret: int
    arg_regs: tuple[int, ...]
    ptr_size: int
    stack_args_offset: int  # where stack argument 0 lives, relative to SP at entry

    @property
    def slot_size(self) -> int:
        return ARM64_HPAT_SLOT if self.machine is Machine.ARM64 else HPAT_SLOT

    # ---- calls ------------------------------------------------------------------
    def setup_call(self, uc: unicorn.Uc, stack_top: int, ret_addr: int, args: list[int]) -> None:
        """Registers and stack for a call of a function with ``args``, returning to
        ``ret_addr``."""
        ps = self.ptr_size
        mask = (1 << (8 * ps)) - 1
        reg_args = args[: len(self.arg_regs)]
        stack_args = args[len(self.arg_regs):]
        nstack = max(len(stack_args), 4 if self.machine is Machine.X64 else 0)
        sp = (stack_top - 0x100 - ps * (nstack + 2)) & ~0xF
        if self.machine is Machine.ARM64:
            uc.reg_write(a64.UC_ARM64_REG_X30, ret_addr)
            uc.reg_write(a64.UC_ARM64_REG_SP, sp)
            for i, v in enumerate(stack_args):
                uc.mem_write(sp + ps * i, struct.pack("<Q", v & mask))
        else:
            sp -= ps  # the return address: RSP % 16 == 8 at entry on x64
            uc.mem_write(sp, ret_addr.to_bytes(ps, "little"))
            for i, v in enumerate(stack_args):
                uc.mem_write(sp + self.stack_args_offset + ps * i, (v & mask).to_bytes(ps, "little"))
            uc.reg_write(self.sp, sp)
        for reg, v in zip(self.arg_regs, reg_args, strict=False):
            uc.reg_write(reg, v & mask)

    def arg(self, uc: unicorn.Uc, i: int) -> int:
        """Argument ``i`` of the function being entered (for import stubs)."""
        if i < len(self.arg_regs):
            return int(uc.reg_read(self.arg_regs[i]))
        sp = int(uc.reg_read(self.sp))
        off = self.stack_args_offset + self.ptr_size * (i - len(self.arg_regs))
        return int.from_bytes(uc.mem_read(sp + off, self.ptr_size), "little")

    def stub_code(self, stack_bytes: int) -> bytes:
        """The code of an import stub: just a return (Python sets the result first)."""
        if self.machine is Machine.ARM64:
            return struct.pack("<I", 0xD65F03C0)  # ret
        if self.machine is Machine.X86 and stack_bytes:
            return b"\xC2" + struct.pack("<H", stack_bytes)  # ret N (stdcall)
        return b"\xC3"

    # ---- HPAT and redirection ---------------------------------------------------------
    def hpat_stub(self, stub_va: int, target: int) -> tuple[bytes, int, bytes]:
        """(stub code at ``stub_va``, address of the pointer, pointer bytes)."""
        if self.machine is Machine.ARM64:
            code = struct.pack("<IIQ", 0x58000050, 0xD61F0200, target)  # ldr x16,#8; br x16
            return code, stub_va + 8, struct.pack("<Q", target)
        ptr_va = stub_va + PAGE
        if self.machine is Machine.X64:
            code = b"\xFF\x25" + struct.pack("<i", PAGE - 6) + b"\xCC\xCC"  # jmp [rip+0xFFA]
            return code, ptr_va, struct.pack("<Q", target)
        code = b"\xFF\x25" + struct.pack("<I", ptr_va) + b"\xCC\xCC"  # jmp [abs32]
        return code, ptr_va, struct.pack("<I", target)

    def redirect_extent(self) -> tuple[int, int]:
        """(offset from the function, size) of the bytes a redirection may write."""
        if self.machine is Machine.ARM64:
            return 0, 8
        return -6, 8

    def redirect_writes(self, func_va: int, stub_va: int) -> list[tuple[int, bytes]]:
        """The writes that send ``func_va`` to its HPAT stub, in the order the loader
        makes them (the 2-byte entry write last on x86/x64)."""
        if self.machine is Machine.ARM64:
            off = stub_va - func_va
            return [(func_va, struct.pack("<I", 0x14000000 | ((off >> 2) & 0x3FFFFFF)))]
        rel = stub_va - func_va  # E9 at F-5: next instruction at F
        return [(func_va - 5, b"\xE9" + struct.pack("<i", rel)), (func_va, b"\xEB\xF9")]

    def stub_reach(self) -> int:
        """How far a redirected function may be from its HPAT stub."""
        return (1 << 27) - PAGE * 4 if self.machine is Machine.ARM64 else (1 << 31) - PAGE * 4


def abi_for(machine: Machine) -> Abi:
    if machine is Machine.X64:
        return Abi(machine, unicorn.UC_ARCH_X86, unicorn.UC_MODE_64, x86.UC_X86_REG_RIP,
                   x86.UC_X86_REG_RSP, x86.UC_X86_REG_RAX,
                   (x86.UC_X86_REG_RCX, x86.UC_X86_REG_RDX, x86.UC_X86_REG_R8, x86.UC_X86_REG_R9),
                   8, 0x28)
    if machine is Machine.X86:
        return Abi(machine, unicorn.UC_ARCH_X86, unicorn.UC_MODE_32, x86.UC_X86_REG_EIP,
                   x86.UC_X86_REG_ESP, x86.UC_X86_REG_EAX, (), 4, 4)
    return Abi(machine, unicorn.UC_ARCH_ARM64, unicorn.UC_MODE_ARM, a64.UC_ARM64_REG_PC,
               a64.UC_ARM64_REG_SP, a64.UC_ARM64_REG_X0,
               tuple(getattr(a64, f"UC_ARM64_REG_X{i}") for i in range(8)), 8, 0)
