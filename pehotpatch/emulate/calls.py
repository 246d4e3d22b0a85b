"""The call syntax of ``pehp simulate --call`` and of ``[run] calls`` in a sample's
expect.toml: ``name(arg, ...)`` with unsigned integer arguments (decimal or 0x hex),
for example ``telemetry_record(1, 0x10)``."""

from __future__ import annotations

import re
from dataclasses import dataclass

from pehotpatch.errors import UsageError

MAX_ARGS = 16
_CALL = re.compile(r"\s*([A-Za-z_?@$][\w?@$]*)\s*\((.*)\)\s*", re.DOTALL)
_INT = re.compile(r"0[xX][0-9a-fA-F]+|[0-9]+")


@dataclass(frozen=True)
class Call:
    name: str
    args: tuple[int, ...]

    @property
    def text(self) -> str:
        return f"{self.name}({', '.join(str(a) for a in self.args)})"


def parse_call(text: str, ptr_bits: int = 64) -> Call:
    m = _CALL.fullmatch(text)
    if m is None:
        raise UsageError(f"call {text!r} is not of the form name(arg, ...)")
    inner = m.group(2).strip()
    parts = [p.strip() for p in inner.split(",")] if inner else []
    if len(parts) > MAX_ARGS:
        raise UsageError(f"call {text!r} has more than {MAX_ARGS} arguments")
    args = []
    for p in parts:
        if not _INT.fullmatch(p):
            raise UsageError(f"call {text!r}: argument {p!r} is not an unsigned integer")
        v = int(p, 0)
        if v >= 1 << ptr_bits:
            raise UsageError(f"call {text!r}: argument {p} does not fit in {ptr_bits} bits")
        args.append(v)
    return Call(m.group(1), tuple(args))


def return_kind(signature: str | None, name: str) -> str:
    """``void``, ``wide`` (pointer or 64-bit integer) or ``int`` (the low 32 bits), from
    the PDB's signature of the export; ``int`` when there is none."""
    if not signature:
        return "int"
    head = signature.split(f"{name}(", 1)[0] if f"{name}(" in signature else signature.split("(", 1)[0]
    head = head.strip()
    if head == "void" or head.endswith(" void"):
        return "void"
    if "*" in head or "long long" in head or "int64" in head:
        return "wide"
    return "int"
