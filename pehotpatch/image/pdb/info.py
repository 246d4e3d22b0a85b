"""The PDB info stream (stream 1): version, signature, age, GUID and the named stream map."""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass, field

from pehotpatch.errors import FormatError

from ..codeview._binary import cstring, u32

PDB_INFO_STREAM = 1
PDB_VERSION_VC70 = 20000404

FEATURE_VC110 = 20091201
FEATURE_VC140 = 20140508
FEATURE_NO_TYPE_MERGE = 0x4D544F4E
FEATURE_MINIMAL_DEBUG_INFO = 0x494E494D

_HEAD = struct.Struct("<III16s")


@dataclass(frozen=True, slots=True)
class PdbInfo:
    version: int
    signature: int
    age: int
    guid: uuid.UUID
    named_streams: dict[str, int] = field(default_factory=dict)
    features: tuple[int, ...] = ()

    @property
    def has_ipi(self) -> bool:
        """An IPI stream (4) is present when the PDB was written by a VC110+ toolchain."""
        return FEATURE_VC110 in self.features or FEATURE_VC140 in self.features


def parse_info(data: bytes, path: str | None = None) -> PdbInfo:
    end = len(data)
    if end < _HEAD.size:
        raise FormatError(
            f"PDB info stream is {end} bytes, shorter than its {_HEAD.size}-byte header", path
        )
    version, signature, age, guid_raw = _HEAD.unpack_from(data, 0)
    if version < PDB_VERSION_VC70:
        raise FormatError(
            f"PDB info stream version {version} is not supported (older than VC7.0)", path
        )
    guid = uuid.UUID(bytes_le=guid_raw)
    pos = _HEAD.size
    names: dict[str, int] = {}
    features: list[int] = []
    if pos < end:
        what = "PDB named stream map"
        strbuf_size = u32(data, pos, end, what, path)
        pos += 4
        if strbuf_size > end - pos:
            raise FormatError(
                f"{what}: string buffer of {strbuf_size} bytes runs past the stream", path
            )
        strbuf_start = pos
        strbuf_end = pos + strbuf_size
        pos = strbuf_end
        size = u32(data, pos, end, what, path)
        capacity = u32(data, pos + 4, end, what, path)
        pos += 8
        if size > capacity or capacity > (end - pos) * 8 + 32:
            raise FormatError(
                f"{what}: {size} entries / capacity {capacity} is not plausible", path
            )
        for _ in range(2):  # present bit vector, deleted bit vector
            words = u32(data, pos, end, what, path)
            if words > (end - pos - 4) // 4:
                raise FormatError(f"{what}: bit vector of {words} words runs past the stream", path)
            pos += 4 + 4 * words
        if size > (end - pos) // 8:
            raise FormatError(f"{what}: {size} entries run past the stream", path)
        for i in range(size):
            key, value = struct.unpack_from("<II", data, pos + 8 * i)
            if key >= strbuf_size:
                raise FormatError(f"{what}: name offset {key} outside the string buffer", path)
            name, _ = cstring(data, strbuf_start + key, strbuf_end, what, path)
            names[name] = value
        pos += 8 * size
        # Trailing feature codes (PdbRaw_FeatureSig), one u32 each; writers put a zero
        # word between the map and the codes, which is not a feature.
        while pos + 4 <= end:
            code = struct.unpack_from("<I", data, pos)[0]
            if code:
                features.append(code)
            pos += 4
    return PdbInfo(version, signature, age, guid, names, tuple(features))
