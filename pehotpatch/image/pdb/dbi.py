"""The DBI stream (stream 3): header, module infos, section contributions, section map
and the optional debug header (whose section-header stream converts segment:offset to RVA).

Substreams follow the 64-byte header in this order: module info, section contributions,
section map, file info, type server map, EC (edit and continue) names, optional debug
header.
"""

from __future__ import annotations

import bisect
import struct
from dataclasses import dataclass, field

from pehotpatch.errors import FormatError

from ..codeview._binary import cstring

PDB_DBI_STREAM = 3
NIL_STREAM = 0xFFFF
DBI_VERSION_V70 = 19990903
SECTION_CONTRIB_VER60 = 0xEFFE0000 + 19970605
SECTION_CONTRIB_V2 = 0xEFFE0000 + 20140516

# indexes into the optional debug header (an array of u16 stream numbers)
DBG_FPO = 0
DBG_EXCEPTION = 1
DBG_FIXUP = 2
DBG_OMAP_TO_SRC = 3
DBG_OMAP_FROM_SRC = 4
DBG_SECTION_HDR = 5
DBG_TOKEN_RID_MAP = 6
DBG_XDATA = 7
DBG_PDATA = 8
DBG_NEW_FPO = 9
DBG_SECTION_HDR_ORIG = 10

_HEADER = struct.Struct("<iIIHHHHHHiiiiiIiiHHI")
_SC = struct.Struct(
    "<HHiiIHHII"
)  # section, pad, offset, size, characteristics, module, pad, data crc, reloc crc
_SC2 = struct.Struct("<HHiiIHHIII")
_MODI = struct.Struct("<I28sHHIIIHHIII")
_SECMAP = struct.Struct("<HHHHHHII")


@dataclass(frozen=True, slots=True)
class DbiHeader:
    version_signature: int
    version: int
    age: int
    global_stream: int
    build_number: int
    public_stream: int
    pdb_dll_version: int
    sym_record_stream: int
    pdb_dll_rebuild: int
    mod_info_size: int
    section_contribution_size: int
    section_map_size: int
    source_info_size: int
    type_server_map_size: int
    mfc_type_server_index: int
    optional_dbg_header_size: int
    ec_substream_size: int
    flags: int
    machine: int
    padding: int

@dataclass(slots=True)
class SectionContribution:
    section: int  # 1-based segment number
    offset: int
    size: int
    characteristics: int
    module_index: int
    data_crc: int
    reloc_crc: int
    coff_section: int | None = None  # V2 only: section number inside the object


@dataclass(frozen=True, slots=True)
class ModuleInfo:
    index: int
    module_name: str
    obj_name: str
    sym_stream: int  # NIL_STREAM (0xFFFF) when the module has no symbol stream
    sym_byte_size: int
    c11_byte_size: int
    c13_byte_size: int
    source_file_count: int
    flags: int
    section_contribution: SectionContribution

    @property
    def has_symbols(self) -> bool:
        return self.sym_stream != NIL_STREAM and self.sym_byte_size > 0


@dataclass(frozen=True, slots=True)
class SectionMapEntry:
    flags: int
    overlay: int
    group: int
    frame: int
    section_name: int
    class_name: int
    offset: int
    length: int


@dataclass(slots=True)
class DbiStream:
    header: DbiHeader
    modules: list[ModuleInfo]
    section_contributions: list[SectionContribution]
    section_map: list[SectionMapEntry]
    debug_streams: list[int]
    ec_names: bytes = b""
    _sc_index: list[tuple[int, int, int]] | None = field(default=None, repr=False)

    @property
    def machine(self) -> int:
        return self.header.machine

    def debug_stream(self, which: int) -> int | None:
        """Stream number of an optional debug stream (DBG_SECTION_HDR, ...) or None."""
        if which < len(self.debug_streams):
            s = self.debug_streams[which]
            return None if s == NIL_STREAM else s
        return None

    def module_of(self, section: int, offset: int) -> int | None:
        """Index of the module whose section contribution holds ``section:offset``."""
        if self._sc_index is None:
            self._sc_index = sorted(
                (c.section, c.offset, i)
                for i, c in enumerate(self.section_contributions)
                if c.size > 0
            )
        idx = self._sc_index
        i = bisect.bisect_right(idx, (section, offset, 1 << 62)) - 1
        if i < 0:
            return None
        sec, off, ci = idx[i]
        c = self.section_contributions[ci]
        if sec == section and off <= offset < off + c.size:
            return c.module_index
        return None


def parse_dbi(data: bytes, path: str | None = None) -> DbiStream:
    end = len(data)
    if end < _HEADER.size:
        raise FormatError(
            f"DBI stream is {end} bytes, shorter than its {_HEADER.size}-byte header", path
        )
    h = DbiHeader(*_HEADER.unpack_from(data, 0))
    if h.version_signature != -1:
        raise FormatError(f"DBI stream signature {h.version_signature} is not -1", path)
    if h.version < DBI_VERSION_V70:
        raise FormatError(
            f"DBI stream version {h.version} is not supported (older than VC7.0)", path
        )
    sizes = [
        ("module info", h.mod_info_size),
        ("section contribution", h.section_contribution_size),
        ("section map", h.section_map_size),
        ("file info", h.source_info_size),
        ("type server map", h.type_server_map_size),
        ("EC", h.ec_substream_size),
        ("optional debug header", h.optional_dbg_header_size),
    ]
    ranges: dict[str, tuple[int, int]] = {}
    pos = _HEADER.size
    for name, size in sizes:
        if size < 0 or size > end - pos:
            raise FormatError(
                f"DBI {name} substream size {size} runs past the stream ({end} bytes)", path
            )
        ranges[name] = (pos, pos + size)
        pos += size
    modules = _parse_modules(data, *ranges["module info"], path)
    contribs = _parse_contribs(data, *ranges["section contribution"], path)
    secmap = _parse_section_map(data, *ranges["section map"], path)
    a, b = ranges["optional debug header"]
    n = (b - a) // 2
    debug_streams = list(struct.unpack_from(f"<{n}H", data, a))
    ea, eb = ranges["EC"]
    return DbiStream(h, modules, contribs, secmap, debug_streams, data[ea:eb])


def _parse_modules(data: bytes, pos: int, end: int, path: str | None) -> list[ModuleInfo]:
    out: list[ModuleInfo] = []
    while pos < end:
        if pos + _MODI.size > end:
            raise FormatError(f"DBI module info {len(out)} truncated at offset {pos:#x}", path)
        (
            _unused,
            sc_raw,
            flags,
            sym_stream,
            sym_size,
            c11,
            c13,
            nfiles,
            _pad,
            _unused2,
            _src_ni,
            _pdb_ni,
        ) = _MODI.unpack_from(data, pos)
        sc = SectionContribution(*_unpack_sc(sc_raw))
        name, p = cstring(data, pos + _MODI.size, end, "DBI module name", path)
        obj, p = cstring(data, p, end, "DBI module object name", path)
        out.append(
            ModuleInfo(len(out), name, obj, sym_stream, sym_size, c11, c13, nfiles, flags, sc)
        )
        pos = (p + 3) & ~3
    return out


def _unpack_sc(raw: bytes) -> tuple[int, ...]:
    section, _pad, offset, size, chars, module, _pad2, dcrc, rcrc = _SC.unpack(raw)
    return section, offset, size, chars, module, dcrc, rcrc


def _parse_contribs(data: bytes, pos: int, end: int, path: str | None) -> list[SectionContribution]:
    if pos == end:
        return []
    if end - pos < 4:
        raise FormatError("DBI section contribution substream truncated", path)
    version = struct.unpack_from("<I", data, pos)[0]
    pos += 4
    if version == SECTION_CONTRIB_VER60:
        rec = _SC
    elif version == SECTION_CONTRIB_V2:
        rec = _SC2
    else:
        raise FormatError(f"DBI section contribution version {version:#x} is not supported", path)
    if (end - pos) % rec.size:
        raise FormatError(
            "DBI section contribution substream is not a whole number of entries", path
        )
    out = []
    for raw in rec.iter_unpack(data[pos:end]):
        isect = raw[9] if rec is _SC2 else None
        out.append(
            SectionContribution(raw[0], raw[2], raw[3], raw[4], raw[5], raw[7], raw[8], isect)
        )
    return out


def _parse_section_map(data: bytes, pos: int, end: int, path: str | None) -> list[SectionMapEntry]:
    if pos == end:
        return []
    if end - pos < 4:
        raise FormatError("DBI section map truncated", path)
    count, _log_count = struct.unpack_from("<HH", data, pos)
    pos += 4
    if count * _SECMAP.size > end - pos:
        raise FormatError(f"DBI section map: {count} entries run past the substream", path)
    return [
        SectionMapEntry(*_SECMAP.unpack_from(data, pos + i * _SECMAP.size)) for i in range(count)
    ]
