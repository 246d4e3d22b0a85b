"""The call syntax of ``pehp simulate --call`` and of ``[run] calls`` in a sample's
expect.toml: ``name(arg, ...)``, for example ``telemetry_record(1, 0x10)``.

An argument is an unsigned integer (decimal or 0x hex) or a buffer, passed as its
address:

- ``bytes(N)`` / ``bytes(N, SEED)``: N bytes of a fixed pseudo-random sequence (SEED 0 by
  default), for input data;
- ``zeros(N)``: N zero bytes, for output;
- ``"text"``: the ASCII text and a terminating NUL (no escapes; no ``"`` inside).

Each buffer of each call is a fresh one; the simulation puts it at the same address in
every world and reports its contents after the call (see :mod:`pehotpatch.emulate.engine`).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from pehotpatch.errors import UsageError

MAX_ARGS = 16
MAX_BUFFER = 1 << 20  # bytes per buffer
_CALL = re.compile(r"\s*([A-Za-z_?@$][\w?@$]*)\s*\((.*)\)\s*", re.DOTALL)
_INT = re.compile(r"0[xX][0-9a-fA-F]+|[0-9]+")
_NUM = r"(0[xX][0-9a-fA-F]+|[0-9]+)"
_BYTES = re.compile(rf"bytes\(\s*{_NUM}\s*(?:,\s*{_NUM}\s*)?\)")
_ZEROS = re.compile(rf"zeros\(\s*{_NUM}\s*\)")
_TEXT = re.compile(r'"([\x20-\x21\x23-\x7e]*)"')
# One argument: a quoted text, a buffer form (its inner comma kept), or anything up to
# the next comma.
_ARG = re.compile(r'\s*("[^"]*"|(?:bytes|zeros)\([^)]*\)|[^,]*?)\s*(?:,|$)')


@dataclass(frozen=True)
class Buffer:
    """A buffer argument: ``kind`` is ``bytes``, ``zeros`` or ``text``."""

    kind: str
    size: int
    seed: int = 0
    text: str = ""

    def content(self) -> bytes:
        if self.kind == "zeros":
            return bytes(self.size)
        if self.kind == "text":
            return self.text.encode("ascii") + b"\0"
        out = bytearray()
        counter = 0
        while len(out) < self.size:  # BLAKE2b in counter mode: the same bytes everywhere
            out += hashlib.blake2b(counter.to_bytes(8, "little"), digest_size=64,
                                   key=self.seed.to_bytes(8, "little")).digest()
            counter += 1
        return bytes(out[: self.size])

    def spelling(self) -> str:
        if self.kind == "text":
            return f'"{self.text}"'
        if self.kind == "bytes" and self.seed:
            return f"bytes({self.size}, {self.seed})"
        return f"{self.kind}({self.size})"


Arg = int | Buffer


@dataclass(frozen=True)
class Call:
    name: str
    args: tuple[Arg, ...]

    @property
    def text(self) -> str:
        return f"{self.name}({', '.join(a.spelling() if isinstance(a, Buffer) else str(a) for a in self.args)})"

    @property
    def buffers(self) -> tuple[Buffer, ...]:
        return tuple(a for a in self.args if isinstance(a, Buffer))


def _split(text: str, inner: str) -> list[str]:
    if not inner:
        return []
    parts: list[str] = []
    pos = 0
    while pos <= len(inner):
        m = _ARG.match(inner, pos)
        if m is None or m.end() == pos:
            raise UsageError(f"call {text!r} is not of the form name(arg, ...)")
        parts.append(m.group(1))
        if m.end() >= len(inner) and not inner.endswith(","):
            break
        pos = m.end()
        if len(parts) > MAX_ARGS:
            break
    return parts


def _buffer(text: str, p: str) -> Buffer | None:
    if m := _BYTES.fullmatch(p):
        size, seed = int(m.group(1), 0), int(m.group(2) or "0", 0)
        if seed >= 1 << 64:
            raise UsageError(f"call {text!r}: the seed of {p} does not fit in 64 bits")
        b = Buffer("bytes", size, seed)
    elif m := _ZEROS.fullmatch(p):
        b = Buffer("zeros", int(m.group(1), 0))
    elif p.startswith('"'):
        m = _TEXT.fullmatch(p)
        if m is None:
            raise UsageError(f"call {text!r}: text argument {p} is not printable ASCII in double quotes")
        return Buffer("text", len(m.group(1)) + 1, text=m.group(1))
    else:
        return None
    if not 0 < b.size <= MAX_BUFFER:
        raise UsageError(f"call {text!r}: buffer {p} must hold 1 to {MAX_BUFFER} bytes")
    return b


def parse_call(text: str, ptr_bits: int = 64) -> Call:
    m = _CALL.fullmatch(text)
    if m is None:
        raise UsageError(f"call {text!r} is not of the form name(arg, ...)")
    parts = _split(text, m.group(2).strip())
    if len(parts) > MAX_ARGS:
        raise UsageError(f"call {text!r} has more than {MAX_ARGS} arguments")
    args: list[Arg] = []
    for p in parts:
        buf = _buffer(text, p)
        if buf is not None:
            args.append(buf)
            continue
        if not _INT.fullmatch(p):
            raise UsageError(f"call {text!r}: argument {p!r} is not an unsigned integer or a buffer "
                             '(bytes(N), zeros(N), "text")')
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
