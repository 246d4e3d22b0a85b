"""One emulated address space: PE images mapped at chosen bases with their base
relocations applied, a stack, and pages allocated near an image (HPAT pages).

Images are mapped the way the loader maps them: headers read-only, each section with
its own permissions (when sections are page aligned), bytes beyond the raw data zero.
Writes made by the patch engine go through :meth:`AddressSpace.write`, which ignores
page protection as the loader does when it briefly unprotects a page.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import unicorn

from pehotpatch.emulate.abi import PAGE, Abi, abi_for
from pehotpatch.errors import FormatError
from pehotpatch.image.machine import Machine
from pehotpatch.image.pe import PEImage

_REL_ABSOLUTE, _REL_HIGHLOW, _REL_DIR64 = 0, 3, 10

# Where images go: distinct, more than 2 GiB apart on 64-bit machines (as seen under
# Wine), so HPAT pages must be allocated near each redirected image.
IMAGE_SLOTS = {
    Machine.X64: (0x7FF6_1000_0000, 0x7FF7_2000_0000, 0x7FF8_3000_0000),
    Machine.ARM64: (0x7FF6_1000_0000, 0x7FF7_2000_0000, 0x7FF8_3000_0000),
    Machine.X86: (0x2000_0000, 0x4000_0000, 0x6000_0000),  # not 0x10000000, the usual DLL base
}
STACK_BASE = {Machine.X64: 0x10_0000_0000, Machine.ARM64: 0x10_0000_0000, Machine.X86: 0x0100_0000}
STACK_SIZE = 0x10_0000
MISC_BASE = {Machine.X64: 0x20_0000_0000, Machine.ARM64: 0x20_0000_0000, Machine.X86: 0x0300_0000}
# Buffers passed as call arguments (bytes(N), zeros(N), "text"): the same addresses in
# every world, each buffer followed by an unmapped guard page.
SCRATCH_BASE = {Machine.X64: 0x30_0000_0000, Machine.ARM64: 0x30_0000_0000, Machine.X86: 0x0800_0000}
SCRATCH_SIZE = 0x0400_0000  # 64 MiB of buffers per simulation at most
MAX_IMAGE = 0x1000_0000  # 256 MiB of SizeOfImage at most
TCG_BUFFER = 64 * 1024 * 1024


def _align(n: int, a: int = PAGE) -> int:
    return (n + a - 1) & ~(a - 1)


@dataclass
class MappedImage:
    """An image in the address space: ``role`` is base, patch, patch2 or standalone."""

    role: str
    pe: PEImage
    va: int
    size: int

    def contains(self, va: int) -> bool:
        return self.va <= va < self.va + self.size

    def rva(self, va: int) -> int:
        return va - self.va


@dataclass
class AddressSpace:
    machine: Machine
    uc: unicorn.Uc = field(init=False)
    abi: Abi = field(init=False)
    images: list[MappedImage] = field(default_factory=list)
    regions: list[tuple[int, int]] = field(default_factory=list)  # every mapped [start, end)
    misc_next: int = 0
    scratch_next: int = 0

    def __post_init__(self) -> None:
        self.abi = abi_for(self.machine)
        self.uc = unicorn.Uc(self.abi.arch, self.abi.mode)
        # unicorn reserves 1 GiB for translated code by default; three worlds of a simulation
        # then need 3 GiB of address space (and fail under a memory limit)
        self.uc.ctl_set_tcg_buffer_size(TCG_BUFFER)  # type: ignore[attr-defined]
        self.stack_top = STACK_BASE[self.machine] + STACK_SIZE
        self._map(STACK_BASE[self.machine], STACK_SIZE, unicorn.UC_PROT_READ | unicorn.UC_PROT_WRITE)
        self.misc_next = MISC_BASE[self.machine]
        self.scratch_next = SCRATCH_BASE[self.machine]

    # ---- raw mapping ----------------------------------------------------------------
    def _map(self, va: int, size: int, perms: int) -> None:
        self.uc.mem_map(va, size, perms)
        self.regions.append((va, va + size))

    def is_free(self, va: int, size: int) -> bool:
        return all(va + size <= s or e <= va for s, e in self.regions) and va > 0

    def alloc_misc(self, size: int, perms: int) -> int:
        """Pages for stubs and traps, away from every image."""
        va = self.misc_next
        size = _align(size)
        self._map(va, size, perms)
        self.misc_next = va + size + PAGE
        return va

    def alloc_near(self, image: MappedImage, size: int, perms: int) -> int:
        """Pages within reach of every function of ``image`` (just below or above it)."""
        size = _align(size, 0x10000)
        reach = self.abi.stub_reach()
        cands = [image.va - size - k * 0x10000 for k in range(64)]
        cands += [_align(image.va + image.size, 0x10000) + k * 0x10000 for k in range(64)]
        for va in cands:
            far = max(abs(va - image.va), abs(va + size - (image.va + image.size)))
            if va > 0 and far < reach and self.is_free(va, size) and va + size < (1 << 47):
                self._map(va, size, perms)
                return va
        raise FormatError(f"no free pages within reach of {image.role} image for HPAT stubs",
                          image.pe.path)

    def write(self, va: int, data: bytes) -> None:
        """Write as the loader does; code already translated there is dropped, so the
        next execution sees the new bytes."""
        self.uc.mem_write(va, data)
        self.uc.ctl_remove_cache(va, va + len(data))

    def alloc_buffer(self, data: bytes) -> int:
        """A fresh read-write buffer holding ``data``, 16-byte aligned and ending at most 15
        bytes before an unmapped page (an overrun faults); the next one starts after that page.  Addresses depend only on
        the sizes asked for before, so every world places the same calls' buffers alike."""
        size = _align(len(data))
        va = self.scratch_next
        if va + size > SCRATCH_BASE[self.machine] + SCRATCH_SIZE:
            raise OverflowError("call buffers exceed the scratch area")
        self._map(va, size, unicorn.UC_PROT_READ | unicorn.UC_PROT_WRITE)
        self.scratch_next = va + size + PAGE
        start = (va + size - len(data)) & ~15  # as aligned as a heap block
        self.uc.mem_write(start, data)
        return start

    def read(self, va: int, size: int) -> bytes:
        return bytes(self.uc.mem_read(va, size))

    def read_ptr(self, va: int) -> int:
        return int.from_bytes(self.read(va, self.abi.ptr_size), "little")

    def image_at(self, va: int) -> MappedImage | None:
        for im in self.images:
            if im.contains(va):
                return im
        return None

    def image(self, role: str) -> MappedImage:
        for im in self.images:
            if im.role == role:
                return im
        raise KeyError(role)

    # ---- images ---------------------------------------------------------------------
    def map_image(self, pe: PEImage, role: str, slot: int) -> MappedImage:
        """Map ``pe`` at the ``slot``-th image address of its machine, relocated."""
        if pe.machine is not self.machine:
            raise FormatError(f"machine {pe.machine.value} does not match {self.machine.value}",
                              pe.path)
        size = _align(pe.size_of_image)
        if size == 0 or size > MAX_IMAGE:
            raise FormatError(f"SizeOfImage {pe.size_of_image:#x} cannot be mapped", pe.path)
        va = IMAGE_SLOTS[self.machine][slot]
        mem = image_bytes(pe, size)
        apply_relocations(pe, mem, va)
        self._map(va, size, unicorn.UC_PROT_ALL)
        self.uc.mem_write(va, bytes(mem))
        _protect(self.uc, pe, va, size)
        im = MappedImage(role, pe, va, size)
        self.images.append(im)
        return im


def image_bytes(pe: PEImage, size: int) -> bytearray:
    """The image as the loader lays it out in memory (before relocation)."""
    mem = bytearray(size)
    hdr = min(pe.size_of_headers, len(pe.data), size)
    mem[:hdr] = pe.data[:hdr]
    for s in pe.sections:
        n = min(s.raw_size, s.size, max(0, len(pe.data) - s.raw_offset), max(0, size - s.rva))
        if n > 0:
            mem[s.rva : s.rva + n] = pe.data[s.raw_offset : s.raw_offset + n]
    return mem


def apply_relocations(pe: PEImage, mem: bytearray, va: int) -> None:
    delta = va - pe.image_base
    rel = pe.relocations
    size = len(mem)
    usual = _REL_DIR64 if pe.is_pe32_plus else _REL_HIGHLOW  # the reader keeps only other types
    for rva in rel.rvas:
        kind = rel.types.get(rva, usual)
        if kind == _REL_DIR64 and rva + 8 <= size:
            (v,) = struct.unpack_from("<Q", mem, rva)
            struct.pack_into("<Q", mem, rva, (v + delta) & 0xFFFF_FFFF_FFFF_FFFF)
        elif kind == _REL_HIGHLOW and rva + 4 <= size:
            (v,) = struct.unpack_from("<I", mem, rva)
            struct.pack_into("<I", mem, rva, (v + delta) & 0xFFFF_FFFF)
        elif kind != _REL_ABSOLUTE:
            raise FormatError(f"base relocation of type {kind} at RVA {rva:#x} is not supported",
                              pe.path)


def _protect(uc: unicorn.Uc, pe: PEImage, va: int, size: int) -> None:
    """Section permissions, when every section starts on a page."""
    if pe.section_alignment < PAGE or any(s.rva % PAGE for s in pe.sections):
        return
    uc.mem_protect(va, min(_align(pe.size_of_headers), size), unicorn.UC_PROT_READ)
    for s in pe.sections:
        start, end = s.rva, min(_align(s.rva + s.size), size)
        if end <= start:
            continue
        perms = unicorn.UC_PROT_READ if s.readable or not (s.writable or s.executable) else 0
        perms |= unicorn.UC_PROT_WRITE if s.writable else 0
        perms |= unicorn.UC_PROT_EXEC if s.executable else 0
        uc.mem_protect(va + start, end - start, perms or unicorn.UC_PROT_READ)
