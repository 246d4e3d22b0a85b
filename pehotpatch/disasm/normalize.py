"""Per-ISA instruction normalisation: code -> (shape, refs) independent of layout.

A function's *shape* is its disassembly text with every address that depends on where
things were placed replaced: external addresses by the placeholder ``@`` (each one has a
:class:`Ref`, in the same order), addresses inside the function by offsets.  Two
functions whose shapes are equal and whose refs name the same symbols are the same
code, whatever the layout of the images around them (see ``NormalizedCode.key``).

Speed matters (the differ normalises every function of both images), so nothing looks
at instructions one by one in Python: the text of the whole function is produced in
bulk (see :mod:`._decode`), decoded at address 0 so that branch targets inside the
function already print as offsets, and the few places that hold addresses are found
with regular expressions over that text.  About 0.9-1 M instructions/s on x64 and x86 and
0.5 M/s on ARM64 on one core of the development machine (capstone's own decoding being
about a quarter of it).  ``normalize`` is thread-safe (one capstone handle per thread).

This module only dispatches: :mod:`pehotpatch.disasm.x86` handles x86 and x64 (with
:mod:`pehotpatch.disasm.x86_tables` for the tables inside functions) and
:mod:`pehotpatch.disasm.arm64` handles ARM64.
"""

from __future__ import annotations

from collections.abc import Sequence

from pehotpatch.disasm.arm64 import normalize_arm64
from pehotpatch.disasm.model import NormalizedCode
from pehotpatch.disasm.x86 import normalize_x86
from pehotpatch.image.machine import Machine

__all__ = ["normalize"]


def normalize(
    machine: Machine,
    code: bytes,
    rva: int,
    *,
    image_base: int,
    relocs: Sequence[int] = (),
) -> NormalizedCode:
    """Normalise one function's code (``code`` starts at ``rva``).

    ``relocs``: sorted RVAs of base-relocation fixups (x86 HIGHLOW, x64/ARM64 DIR64);
    only those inside ``[rva, rva + len(code))`` are used.  An absolute operand under a
    relocation is an address (``VA - image_base`` is its RVA) and becomes a ref; an
    immediate not under one stays a literal.
    """
    if machine.__class__ is not Machine:
        machine = Machine(machine)
    if code.__class__ is not bytes:
        code = bytes(code)
    if machine is Machine.ARM64:
        return normalize_arm64(code, rva, image_base, relocs)
    return normalize_x86(machine, code, rva, image_base, relocs)

