"""Bulk text disassembly with capstone, without per-instruction ctypes traffic.

``Cs.disasm_lite`` decodes a whole buffer in C (``cs_disasm``) and then reads every
``cs_insn`` record through ctypes, which costs more than the decoding itself.  Here the
record array is copied out in one ``string_at`` and the mnemonic / operand strings are cut
out of it by one regular expression (both run in C): about twice the throughput of
``disasm_lite``.  When the record layout is not the one expected (another capstone build),
:func:`decode` falls back to ``disasm_lite``.

Skip-data mode is on: bytes that do not decode come out as ``.byte 0x..`` pseudo
instructions (one byte on x86, four on ARM64), so decoding never stops early and equal
data gives equal text.
"""

from __future__ import annotations

import ctypes
import re
import sys
import threading

import capstone

from pehotpatch.image.machine import Machine

_ARCH = {
    Machine.X64: (capstone.CS_ARCH_X86, capstone.CS_MODE_64),
    Machine.X86: (capstone.CS_ARCH_X86, capstone.CS_MODE_32),
    Machine.ARM64: (capstone.CS_ARCH_ARM64, capstone.CS_MODE_ARM),
}

_INSN = capstone._cs_insn
_REC = ctypes.sizeof(_INSN)
_OFF_SIZE = _INSN.size.offset
_OFF_MNEM = _INSN.mnemonic.offset
_OFF_OPS = _INSN.op_str.offset
# The strided ``blob[size_offset::record]`` read of the (little-endian, < 256) size field
# and the regex below rely on this layout.
_FAST = (
    sys.byteorder == "little"
    and _INSN.size.size == 2
    and _OFF_OPS == _OFF_MNEM + _INSN.mnemonic.size
    and _OFF_SIZE + 2 <= _OFF_MNEM
)
# One match per record; the two look-aheads capture the NUL-terminated mnemonic and
# operand strings (bytes after each terminator are stale heap contents).
_RECORD_RE = re.compile(
    rb"(?s)(?=.{%d}([^\0]*))(?=.{%d}([^\0]*)).{%d}" % (_OFF_MNEM, _OFF_OPS, _REC)
)
_cs_disasm = capstone._cs.cs_disasm
_cs_free = capstone._cs.cs_free
_string_at = ctypes.string_at
_byref = ctypes.byref
_PINSN = ctypes.POINTER(_INSN)


class Decoder:
    """One capstone handle (skip-data on, detail off) for one machine."""

    __slots__ = ("machine", "cs", "_handle")

    def __init__(self, machine: Machine) -> None:
        arch, mode = _ARCH[machine]
        self.machine = machine
        self.cs = capstone.Cs(arch, mode)
        self.cs.detail = False
        self.cs.skipdata = True
        self._handle = self.cs.csh

    def decode(self, code: bytes, address: int) -> tuple[list[tuple[bytes, bytes]], bytes]:
        """(mnemonic, operands) per instruction, and the instruction sizes as a bytes
        object (one byte per instruction).  ``code`` must be ``bytes``."""
        if not code:
            return [], b""
        if not _FAST:
            return self._decode_lite(code, address)
        p = _PINSN()
        n = _cs_disasm(self._handle, code, len(code), address, 0, _byref(p))
        if n <= 0:
            return [], b""
        try:
            blob = _string_at(p, n * _REC)
        finally:
            _cs_free(p, n)
        pairs = _RECORD_RE.findall(blob)
        sizes = blob[_OFF_SIZE::_REC]
        if self.machine is Machine.ARM64:
            sizes = _add_leftover(code, pairs, sizes)
        return pairs, sizes

    def _decode_lite(self, code: bytes, address: int) -> tuple[list[tuple[bytes, bytes]], bytes]:
        pairs = []
        sizes = bytearray()
        for _addr, size, mnem, ops in self.cs.disasm_lite(code, address):
            pairs.append((mnem.encode(), ops.encode()))
            sizes.append(size)
        return pairs, _add_leftover(code, pairs, bytes(sizes))


def _add_leftover(code: bytes, pairs: list[tuple[bytes, bytes]], sizes: bytes) -> bytes:
    """Skip-data mode on ARM64 drops a last partial word: keep it as a ``.byte`` line so
    that it still takes part in comparisons."""
    done = sum(sizes)
    if done >= len(code):
        return sizes
    rest = code[done:]
    pairs.append((b".byte", ", ".join(f"{b:#04x}" for b in rest).encode()))
    return sizes + bytes((len(rest),))


_local = threading.local()


def decoder(machine: Machine) -> Decoder:
    """The calling thread's cached decoder for ``machine``."""
    cache = getattr(_local, "decoders", None)
    if cache is None:
        cache = _local.decoders = {}
    d = cache.get(machine)
    if d is None:
        d = cache[machine] = Decoder(machine)
    return d
