"""Import stubs for the C runtime's memory and string functions and its heap.

Images built against the Universal CRT import ``memcpy``/``memset``/... from
``vcruntime140.dll`` and ``malloc``/``free``/... from ``ucrtbase.dll`` or the
``api-ms-win-crt-*`` API sets.  Here they are done in Python on the emulated memory.
The heap is a bump allocator in its own region of the address space: blocks are 16-byte
aligned, never reused (``free`` only forgets the size), and fresh memory is zero, so the
same calls get the same addresses in every world.  All of these are cdecl on x86.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import unicorn

from pehotpatch.emulate.abi import PAGE
from pehotpatch.image.machine import Machine

HEAP_BASE = {Machine.X64: 0x40_0000_0000, Machine.ARM64: 0x40_0000_0000, Machine.X86: 0x0C00_0000}
HEAP_SIZE = 0x1000_0000  # 256 MiB per world
_GROW = 0x10_0000  # mapped 1 MiB at a time
MAX_BLOCK = HEAP_SIZE  # larger requests fail (NULL), as a real heap would
MAX_SPAN = 0x1000_0000  # bytes a memory function may touch in one call
CRT_DLLS = ("vcruntime140.dll", "ucrtbase.dll", "msvcrt.dll")


class StubFault(Exception):
    """A stub was given memory it cannot use (unmapped, or too large a span)."""


@dataclass
class Heap:
    machine: Machine
    next: int = 0
    mapped_end: int = 0
    sizes: dict[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.next = self.mapped_end = HEAP_BASE[self.machine]

    def alloc(self, uc: unicorn.Uc, n: int, align: int = 16) -> int:
        if n > MAX_BLOCK or align <= 0 or align & (align - 1):
            return 0
        va = (self.next + align - 1) & ~(align - 1)
        end = va + max(n, 1)
        if end > HEAP_BASE[self.machine] + HEAP_SIZE:
            return 0
        if end > self.mapped_end:
            grow = (end - self.mapped_end + _GROW - 1) // _GROW * _GROW
            uc.mem_map(self.mapped_end, grow, unicorn.UC_PROT_READ | unicorn.UC_PROT_WRITE)
            self.mapped_end += grow
        self.next = (end + 15) & ~15
        self.sizes[va] = n
        return va


class Ctx:
    """What a stub sees: its arguments, the emulated memory, the world's heap."""

    def __init__(self, uc: unicorn.Uc, arg: Callable[[int], int], heap: Heap, ptr_size: int):
        self.uc = uc
        self.arg = arg
        self.heap = heap
        self.mask = (1 << (8 * ptr_size)) - 1

    def read(self, va: int, n: int) -> bytes:
        if n > MAX_SPAN:
            raise StubFault(f"{n:#x} bytes")
        return bytes(self.uc.mem_read(va, n)) if n else b""

    def write(self, va: int, data: bytes) -> None:
        if len(data) > MAX_SPAN:
            raise StubFault(f"{len(data):#x} bytes")
        if data:
            self.uc.mem_write(va, data)

    def cstring(self, va: int) -> bytes:
        out = b""
        while True:
            page_left = PAGE - (va + len(out)) % PAGE  # never read past a page before its NUL
            chunk = self.read(va + len(out), page_left)
            k = chunk.find(b"\0")
            if k >= 0:
                return out + chunk[:k]
            out += chunk
            if len(out) > MAX_SPAN:
                raise StubFault("unterminated string")


def _memcpy(c: Ctx) -> int:
    dst, src, n = c.arg(0), c.arg(1), c.arg(2)
    c.write(dst, c.read(src, n))
    return dst


def _memset(c: Ctx) -> int:
    dst, v, n = c.arg(0), c.arg(1) & 0xFF, c.arg(2)
    c.write(dst, bytes((v,)) * n)
    return dst


def _cmp(a: bytes, b: bytes) -> int:
    return 0 if a == b else -1 if a < b else 1


def _memcmp(c: Ctx) -> int:
    n = c.arg(2)
    return _cmp(c.read(c.arg(0), n), c.read(c.arg(1), n)) & 0xFFFFFFFF


def _memchr(c: Ctx) -> int:
    p, v, n = c.arg(0), c.arg(1) & 0xFF, c.arg(2)
    k = c.read(p, n).find(bytes((v,)))
    return 0 if k < 0 else p + k


def _strlen(c: Ctx) -> int:
    return len(c.cstring(c.arg(0)))


def _strchr(c: Ctx) -> int:
    p, v = c.arg(0), c.arg(1) & 0xFF
    s = c.cstring(p) + b"\0"  # strchr finds the terminator too
    k = s.find(bytes((v,)))
    return 0 if k < 0 else p + k


def _strcmp(c: Ctx) -> int:
    return _cmp(c.cstring(c.arg(0)), c.cstring(c.arg(1))) & 0xFFFFFFFF


def _strncmp(c: Ctx) -> int:
    n = c.arg(2)
    return _cmp(c.cstring(c.arg(0))[:n], c.cstring(c.arg(1))[:n]) & 0xFFFFFFFF


def _strstr(c: Ctx) -> int:
    h = c.arg(0)
    k = c.cstring(h).find(c.cstring(c.arg(1)))
    return 0 if k < 0 else h + k


def _malloc(c: Ctx) -> int:
    return c.heap.alloc(c.uc, c.arg(0))


def _calloc(c: Ctx) -> int:
    n, size = c.arg(0), c.arg(1)
    return 0 if n and size > MAX_BLOCK // n else c.heap.alloc(c.uc, n * size)


def _realloc(c: Ctx) -> int:
    p, n = c.arg(0), c.arg(1)
    if p == 0:
        return c.heap.alloc(c.uc, n)
    old = c.heap.sizes.get(p)
    if old is None:
        raise StubFault(f"realloc of {p:#x}, which malloc did not return")
    q = c.heap.alloc(c.uc, n)
    if q:
        c.write(q, c.read(p, min(old, n)))
        del c.heap.sizes[p]
    return q


def _free(c: Ctx) -> None:
    c.heap.sizes.pop(c.arg(0), None)
    return None


def _aligned_malloc(c: Ctx) -> int:
    return c.heap.alloc(c.uc, c.arg(0), max(16, c.arg(1)))


# name -> (argument count, implementation)
CRT: dict[str, tuple[int, Callable[[Ctx], int | None]]] = {
    "memcpy": (3, _memcpy),
    "memmove": (3, _memcpy),  # read whole, then written: overlap is safe
    "memset": (3, _memset),
    "memcmp": (3, _memcmp),
    "memchr": (3, _memchr),
    "strlen": (1, _strlen),
    "strchr": (2, _strchr),
    "strcmp": (2, _strcmp),
    "strncmp": (3, _strncmp),
    "strstr": (2, _strstr),
    "malloc": (1, _malloc),
    "calloc": (2, _calloc),
    "realloc": (2, _realloc),
    "free": (1, _free),
    "_aligned_malloc": (2, _aligned_malloc),
    "_aligned_free": (1, _free),
}


def is_crt_dll(dll: str) -> bool:
    d = dll.lower()
    return d in CRT_DLLS or d.startswith("api-ms-win-crt-")
