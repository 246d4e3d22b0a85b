"""Purpose-broken tables: reads the Hotpatch Table of a final image straight from its bytes
(pefile finds the load config; the layout is docs/FORMAT.md's) and writes a copy with one
record dropped, one record's first bytes changed, or two targets swapped."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

INVERSE = 0x80000000
TYPES = {0x1C000: "func", 0x2C000: "abs", 0x5C000: "ind", 0x44000: "ct"}


@dataclass
class Record:
    inverse: bool
    type: int
    words: list[int]

    @property
    def kind(self) -> str:
        """The names livepatch.exe prints: iabs, iind, ifunc, ict, func."""
        return ("i" if self.inverse else "") + TYPES.get(self.type, "?")

    @property
    def site(self) -> int:
        return self.words[0]

    @property
    def value(self) -> int:
        return self.words[1]


@dataclass
class Table:
    data: bytearray
    info: int  # file offset of IMAGE_HOT_PATCH_INFO
    size: int
    patch_table: int  # offset of the first chunk, from IMAGE_HOT_PATCH_INFO
    stride: int
    base: int = 0  # file offset of IMAGE_HOT_PATCH_BASE
    records: list[Record] = field(default_factory=list)

    def find(self, kind: str, site: int | None = None) -> list[Record]:
        return [r for r in self.records if r.kind == kind and (site is None or r.site == site)]

    def encode(self) -> bytes:
        """The image with the records re-chunked (runs of one kind, in order) and Size
        adjusted; bytes the table no longer uses become zero."""
        chunks = b""
        i = 0
        while i < len(self.records):
            j = i
            while j < len(self.records) and (self.records[j].inverse, self.records[j].type) == (
                    self.records[i].inverse, self.records[i].type):
                j += 1
            head = (INVERSE if self.records[i].inverse else 0) | self.records[i].type | (j - i)
            chunks += struct.pack("<I", head)
            for r in self.records[i:j]:
                chunks += struct.pack(f"<{self.stride}I", *r.words)
            i = j
        chunks += b"\0\0\0\0"
        out = bytearray(self.data)
        start = self.info + self.patch_table
        old_end = self.info + self.size
        new_size = self.patch_table + len(chunks)
        assert new_size <= self.size, "a table edit may only shrink or keep the table"
        out[start:old_end] = chunks + bytes(old_end - start - len(chunks))
        struct.pack_into("<I", out, self.info + 4, new_size)
        return bytes(out)


def read(path: Path) -> Table:
    return read_bytes(path.read_bytes())


def read_bytes(image: bytes) -> Table:
    import pefile

    pe = pefile.PE(data=image, fast_load=True)
    lc_rva = pe.OPTIONAL_HEADER.DATA_DIRECTORY[10].VirtualAddress
    data = bytearray(image)
    lc = pe.get_offset_from_rva(lc_rva)
    table_rva = struct.unpack_from("<I", data, lc + 0xF0)[0]
    info = pe.get_offset_from_rva(table_rva)
    pe.close()
    _version, size, _seq, base_list, _count = struct.unpack_from("<5I", data, info)
    extra = struct.unpack_from("<I", data, info + 0x18)[0]
    base = struct.unpack_from("<I", data, info + base_list)[0]
    patch_table = struct.unpack_from("<I", data, info + base + 0x18)[0]
    t = Table(data, info, size, patch_table, 2 + extra, info + base)
    off = info + patch_table
    while True:
        (head,) = struct.unpack_from("<I", data, off)
        off += 4
        if head == 0:
            break
        for _ in range(head & 0xFFF):
            words = list(struct.unpack_from(f"<{t.stride}I", data, off))
            t.records.append(Record(bool(head & INVERSE), head & 0x000FC000, words))
            off += 4 * t.stride
    assert off == info + size, "the chunks end the table"
    return t
