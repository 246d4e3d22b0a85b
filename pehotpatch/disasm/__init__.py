"""Per-ISA instruction normalisation for the function differ.

``normalize(machine, code, rva, image_base=..., relocs=...)`` turns one function's bytes
into a :class:`NormalizedCode`: a layout-independent ``shape`` string plus the external
references (:class:`Ref`) it makes, in order.  Compare two functions with
``a.key(name_of_a) == b.key(name_of_b)``; ``listing(name_of)`` gives per-instruction
lines for a unified diff.  See :mod:`pehotpatch.disasm.x86` and
:mod:`pehotpatch.disasm.arm64` for the rules.
"""

from pehotpatch.disasm.model import (
    CALL,
    DATA,
    HOTPATCH_NOPS,
    INDIRECT_CALL,
    INDIRECT_JUMP,
    JUMP,
    PLACEHOLDER,
    NormalizedCode,
    Ref,
)
from pehotpatch.disasm.normalize import normalize
from pehotpatch.image.machine import Machine

__all__ = [
    "CALL",
    "DATA",
    "HOTPATCH_NOPS",
    "INDIRECT_CALL",
    "INDIRECT_JUMP",
    "JUMP",
    "PLACEHOLDER",
    "Machine",
    "NormalizedCode",
    "Ref",
    "normalize",
]
