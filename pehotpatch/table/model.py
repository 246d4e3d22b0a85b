"""The hot-patch table as data, and its encoding (driven by the declarations in
:mod:`pehotpatch.table.format`).

Layout pehp writes (every offset relative to the start of IMAGE_HOT_PATCH_INFO)::

    IMAGE_HOT_PATCH_INFO      36 bytes (Version 4)
    ULONG base_list[1]         offset of the one IMAGE_HOT_PATCH_BASE
    IMAGE_HOT_PATCH_BASE      32 bytes
    chunks                    ULONG header, then count records of (2 + ExtraPatchSize) ULONGs
    ULONG 0                   terminator
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

from pehotpatch.table.format import (
    CHUNK_INVERSE,
    EMIT_EXTRA_WORDS,
    EMIT_VERSION,
    HOT_PATCH_BASE,
    HOT_PATCH_INFO,
    INFO_SIZE_BY_VERSION,
    MAX_RECORDS_PER_CHUNK,
    TYPE_NAMES,
)


@dataclass(frozen=True, slots=True)
class Record:
    site: int  # word 0: RVA written (in the base for forward records, in the patch for inverse)
    target: int  # word 1: RVA referred to (in the patch for forward records, in the base for inverse)
    extra: tuple[int, ...] = ()  # ExtraPatchSize words

    def to_json(self) -> dict[str, Any]:
        return {"site": f"{self.site:#x}", "target": f"{self.target:#x}",
                "extra": [f"{w:#010x}" for w in self.extra]}


@dataclass(frozen=True, slots=True)
class Chunk:
    type: int  # FUNCTION, ABSOLUTE, ... (without the INVERSE/OBLIGATORY bits and count)
    inverse: bool
    records: tuple[Record, ...]
    obligatory: bool = False
    reserved: int = 0  # reserved bits as found (decoding only)
    offset: int = 0  # of the chunk header, from the table start (decoding only)

    @property
    def type_name(self) -> str:
        name = TYPE_NAMES.get(self.type, f"type {self.type:#x}")
        return f"INVERSE {name}" if self.inverse else name

    @property
    def header(self) -> int:
        return (CHUNK_INVERSE if self.inverse else 0) | self.type | len(self.records)


@dataclass
class HotPatchTable:
    """One table: header fields, the base descriptor, the chunks."""

    sequence: int
    base_timestamp: int
    base_checksum: int
    base_flags: int
    chunks: list[Chunk] = field(default_factory=list)
    version: int = EMIT_VERSION
    extra_words: int = EMIT_EXTRA_WORDS
    info_flags: int = 0
    min_sequence: int = 0
    base_sequence: int | None = None  # None: the header's
    code_integrity: tuple[int, int] = (0, 0)

    def records(self, rtype: int, *, inverse: bool) -> list[Record]:
        return [r for c in self.chunks if c.type == rtype and c.inverse == inverse for r in c.records]


def split_chunks(rtype: int, records: list[Record], *, inverse: bool) -> list[Chunk]:
    """Records of one type as chunks of at most 4095 records."""
    return [Chunk(rtype, inverse, tuple(records[i:i + MAX_RECORDS_PER_CHUNK]))
            for i in range(0, len(records), MAX_RECORDS_PER_CHUNK)]


def encode(table: HotPatchTable) -> bytes:
    """The table's bytes, exactly ``Size`` long."""
    info_size = INFO_SIZE_BY_VERSION[table.version]
    list_off = info_size
    base_off = list_off + 4
    chunks_off = base_off + HOT_PATCH_BASE.size
    stride = 2 + table.extra_words
    body = bytearray()
    for c in table.chunks:
        if not c.records:
            continue
        body += struct.pack("<I", c.header)
        for r in c.records:
            extra = tuple(r.extra) + (0,) * (table.extra_words - len(r.extra))
            if len(extra) != table.extra_words:
                raise ValueError(f"record {r} has more extra words than ExtraPatchSize {table.extra_words}")
            body += struct.pack(f"<{stride}I", r.site, r.target, *extra)
    body += struct.pack("<I", 0)
    size = chunks_off + len(body)
    info = {
        "Version": table.version, "Size": size, "SequenceNumber": table.sequence,
        "BaseImageList": list_off, "BaseImageCount": 1, "BufferOffset": 0,
        "ExtraPatchSize": table.extra_words, "MinSequenceNumber": table.min_sequence,
        "Flags": table.info_flags,
    }
    present = {f.name: info[f.name] for f in HOT_PATCH_INFO.fields_within(info_size)}
    out = bytearray(HOT_PATCH_INFO.encode(present, size=info_size))
    out += struct.pack("<I", base_off)
    out += HOT_PATCH_BASE.encode({
        "SequenceNumber": table.sequence if table.base_sequence is None else table.base_sequence,
        "Flags": table.base_flags,
        "OriginalTimeDateStamp": table.base_timestamp,
        "OriginalCheckSum": table.base_checksum,
        "CodeIntegrityInfo": table.code_integrity[0],
        "CodeIntegritySize": table.code_integrity[1],
        "PatchTable": chunks_off,
        "BufferOffset": 0,
    })
    out += body
    assert len(out) == size
    return bytes(out)
