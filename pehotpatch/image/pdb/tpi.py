"""The TPI (stream 2, types) and IPI (stream 4, ids) streams: header and record index.

The records themselves are indexed lazily by
:class:`~pehotpatch.image.codeview.stream.TypeRecords` (offsets only, on first use) and
decoded on demand by :class:`~pehotpatch.image.codeview.types.TypeTable`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from pehotpatch.errors import FormatError

from ..codeview.stream import TypeRecords

PDB_TPI_STREAM = 2
PDB_IPI_STREAM = 4
TPI_VERSION_V80 = 20040203
MIN_TYPE_INDEX = 0x1000
MAX_TYPE_INDEX = 0x7FFFFFFF

_HEADER = struct.Struct("<IIIIIHHIIiIiIiI")


@dataclass(frozen=True, slots=True)
class TpiHeader:
    version: int
    header_size: int
    type_index_begin: int
    type_index_end: int
    type_record_bytes: int
    hash_stream_index: int
    hash_aux_stream_index: int
    hash_key_size: int
    num_hash_buckets: int
    hash_value_buffer_offset: int
    hash_value_buffer_length: int
    index_offset_buffer_offset: int
    index_offset_buffer_length: int
    hash_adj_buffer_offset: int
    hash_adj_buffer_length: int

    @property
    def record_count(self) -> int:
        return self.type_index_end - self.type_index_begin


@dataclass(frozen=True, slots=True)
class TpiStream:
    header: TpiHeader
    records: TypeRecords


def parse_tpi(data: bytes, path: str | None = None, what: str = "TPI") -> TpiStream:
    end = len(data)
    if end < _HEADER.size:
        raise FormatError(
            f"{what} stream is {end} bytes, shorter than its {_HEADER.size}-byte header", path
        )
    h = TpiHeader(*_HEADER.unpack_from(data, 0))
    if h.version != TPI_VERSION_V80:
        raise FormatError(f"{what} stream version {h.version} is not supported", path)
    if h.header_size < _HEADER.size or h.header_size > end:
        raise FormatError(f"{what} header size {h.header_size} is invalid", path)
    if h.type_record_bytes > end - h.header_size:
        raise FormatError(
            f"{what} records ({h.type_record_bytes} bytes) run past the stream ({end} bytes)", path
        )
    if not (MIN_TYPE_INDEX <= h.type_index_begin <= h.type_index_end <= MAX_TYPE_INDEX):
        raise FormatError(
            f"{what} type index range {h.type_index_begin:#x}..{h.type_index_end:#x} is invalid",
            path,
        )
    if h.record_count > h.type_record_bytes // 4:
        raise FormatError(
            f"{what} claims {h.record_count} records in {h.type_record_bytes} bytes", path
        )
    start = h.header_size
    records = TypeRecords(
        data,
        start,
        start + h.type_record_bytes,
        h.type_index_begin,
        path,
        expected_count=h.record_count,
    )
    return TpiStream(h, records)
