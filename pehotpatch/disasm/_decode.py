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
# cs_disasm / cs_free with plain pointer arguments: the code is passed as an address
# into the bytes object, so that a long function can be decoded in chunks without
# copying its tail.
_c_size_t, _c_void_p = ctypes.c_size_t, ctypes.c_void_p
_cs_disasm = ctypes.CFUNCTYPE(
    _c_size_t, _c_size_t, _c_void_p, _c_size_t, ctypes.c_uint64, _c_size_t, _c_void_p
)(("cs_disasm", capstone._cs))
_cs_free = ctypes.CFUNCTYPE(None, _c_void_p, _c_size_t)(("cs_free", capstone._cs))
_string_at = ctypes.string_at
_byref = ctypes.byref
_c_char_p = ctypes.c_char_p
_cast = ctypes.cast
# Instructions per cs_disasm call: keeps the record array (about 1 MB) in cache.
_CHUNK = 4096
_ADDRESS_MASK = {
    Machine.X64: (1 << 64) - 1,
    Machine.X86: (1 << 32) - 1,
    Machine.ARM64: (1 << 64) - 1,
}


class Decoder:
    """One capstone handle (skip-data on, detail off) for one machine."""

    __slots__ = ("machine", "cs", "_handle", "_out", "_out_ref", "_mask")

    def __init__(self, machine: Machine) -> None:
        arch, mode = _ARCH[machine]
        self.machine = machine
        self.cs = capstone.Cs(arch, mode)
        self.cs.detail = False
        self.cs.skipdata = True
        self._handle = self.cs.csh
        self._out = _c_void_p()
        self._out_ref = _byref(self._out)
        self._mask = _ADDRESS_MASK[machine]

    def decode(self, code: bytes, address: int) -> tuple[list[tuple[bytes, bytes]], bytes]:
        """(mnemonic, operands) per instruction, and the instruction sizes as a bytes
        object (one byte per instruction).  ``code`` must be ``bytes``; ``address`` is
        that of its first byte."""
        if not code:
            return [], b""
        if not _FAST:
            return self._decode_lite(code, address)
        total = len(code)
        ptr: int = _cast(_c_char_p(code), _c_void_p).value  # type: ignore[assignment]
        # (no copy: the pointer is into `code`, which stays alive during the calls)
        out = self._out
        pairs: list[tuple[bytes, bytes]] | None = None
        sizes = b""
        off = 0
        while off < total:
            n = _cs_disasm(
                self._handle, ptr + off, total - off, (address + off) & self._mask, _CHUNK,
                self._out_ref,
            )  # fmt: skip
            if n <= 0:
                break
            try:
                blob = _string_at(out, n * _REC)
            finally:
                _cs_free(out, n)
            chunk_sizes = blob[_OFF_SIZE::_REC]
            if pairs is None:
                pairs = _RECORD_RE.findall(blob)
                sizes = chunk_sizes
                if n < _CHUNK:
                    break
            else:
                pairs += _RECORD_RE.findall(blob)
                sizes += chunk_sizes
            off += sum(chunk_sizes)
        if pairs is None:
            return [], b""
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
