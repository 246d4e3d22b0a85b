"""Reading a hot-patch table strictly: every field, every chunk and record, and every rule
of the Windows loader that the table breaks, each named.

:func:`read_table` never raises on a malformed table: what it cannot read becomes a
:class:`Violation` and decoding stops there.  It raises only for an image whose load
config itself cannot be read (the PE reader's job).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

from pehotpatch.image.headers import min_hotpatch_load_config
from pehotpatch.image.machine import Machine
from pehotpatch.image.pe import PEImage
from pehotpatch.table.format import (
    APPLIED_TYPES,
    BASE_FLAGS_KNOWN,
    CHUNK_COUNT_MASK,
    CHUNK_INVERSE,
    CHUNK_OBLIGATORY,
    CHUNK_RESERVED,
    CHUNK_TYPE_MASK,
    FUNCTION,
    HOT_PATCH_BASE,
    HOT_PATCH_INFO,
    INDIRECT,
    INFO_FLAGS_KNOWN,
    INFO_SIZE_BY_VERSION,
    MACHINE_FLAG,
    MACHINE_OF_FLAG,
    MIN_FUNCTION_SITE,
    TYPE_NAMES,
    TYPE_SITE_RVA,
    TYPE_TARGET_RVA,
    write_extent,
)
from pehotpatch.table.model import Chunk, HotPatchTable, Record

#: A table larger than this is refused unread (pehp's tables are a few KiB).
MAX_TABLE_SIZE = 64 * 1024 * 1024
MAX_EXTRA_WORDS = 64


@dataclass(frozen=True, slots=True)
class Violation:
    """One rule of the loader (or of the format) that the table breaks."""

    code: str  # stable short name, e.g. "sequence-zero"
    message: str
    offset: int | None = None  # from the table start, when it is about one place

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.offset is not None:
            out["offset"] = f"{self.offset:#x}"
        return out


@dataclass
class TableReading:
    """What :func:`read_table` found in one image."""

    present: bool  # the load config names a table
    rva: int = 0
    size: int = 0
    table: HotPatchTable | None = None  # None when the header could not be read
    info_fields: dict[str, int] = field(default_factory=dict)
    base_fields: dict[str, int] = field(default_factory=dict)
    violations: list[Violation] = field(default_factory=list)
    raw: bytes = b""

    @property
    def valid(self) -> bool:
        return self.present and self.table is not None and not self.violations


def read_table(img: PEImage) -> TableReading:
    """The image's hot-patch table (``present`` False when there is none)."""
    lc = img.load_config
    if lc is None or not lc.hotpatch_table_offset:
        return TableReading(present=False)
    rd = TableReading(present=True, rva=lc.hotpatch_table_offset)
    v = rd.violations
    _check_load_config(img, v)
    head = img.try_read(rd.rva, 8)
    if head is None:
        v.append(Violation("table-outside-image", f"HotPatchTableOffset {rd.rva:#x} lies outside every section"))
        return rd
    version, size = struct.unpack("<II", head)
    rd.size = size
    if version not in INFO_SIZE_BY_VERSION:
        v.append(Violation("version", f"Version {version} is not 1-4, the versions the loader accepts", 0))
        return rd
    info_size = INFO_SIZE_BY_VERSION[version]
    if size < info_size:
        v.append(Violation("size-too-small", f"Size {size:#x} is smaller than the version {version} header ({info_size} bytes)", 4))
        return rd
    if size > MAX_TABLE_SIZE:
        v.append(Violation("size-implausible", f"Size {size:#x} is larger than {MAX_TABLE_SIZE:#x}", 4))
        return rd
    if rd.rva + size > img.size_of_image:
        v.append(Violation("table-past-image", f"table {rd.rva:#x}+{size:#x} runs past SizeOfImage {img.size_of_image:#x}"))
    raw = img.try_read(rd.rva, size)
    if raw is None:
        v.append(Violation("table-outside-section", f"table {rd.rva:#x}+{size:#x} is not inside one section's data"))
        return rd
    rd.raw = raw
    _decode(rd, raw, version, img.machine)
    if rd.table is not None:
        v.extend(check_records(rd.table, img.machine, patch_size=img.size_of_image, base_size=None))
    return rd


def _check_load_config(img: PEImage, v: list[Violation]) -> None:
    lc = img.load_config
    assert lc is not None
    ptr = img.machine.pointer_size
    if lc.directory_size != lc.size:
        v.append(Violation("load-config-size", f"load config directory size {lc.directory_size:#x} differs from its Size field {lc.size:#x} (the loader requires them equal)"))
    if lc.size < min_hotpatch_load_config(ptr):
        v.append(Violation("load-config-small", f"load config Size {lc.size:#x} is below {min_hotpatch_load_config(ptr):#x}"))
    chpe = lc.fields.get("CHPEMetadataPointer", 0)
    if ptr == 8 and chpe:
        v.append(Violation("chpe-metadata", f"CHPEMetadataPointer is {chpe:#x}; a 64-bit patch image must have 0"))


def _decode(rd: TableReading, raw: bytes, version: int, machine: Machine) -> None:
    v = rd.violations
    size = len(raw)
    info = HOT_PATCH_INFO.decode(raw, limit=INFO_SIZE_BY_VERSION[version])
    rd.info_fields = info
    if info["SequenceNumber"] == 0:
        v.append(Violation("sequence-zero", "SequenceNumber is 0; the loader requires a non-zero sequence number", 8))
    if info["BaseImageCount"] != 1:
        v.append(Violation("base-count", f"BaseImageCount is {info['BaseImageCount']}; the loader accepts exactly 1", 0x10))
        if info["BaseImageCount"] == 0:
            return
    extra = info.get("ExtraPatchSize", 0)
    if extra > MAX_EXTRA_WORDS:
        v.append(Violation("extra-size", f"ExtraPatchSize {extra} is implausible", 0x18))
        return
    flags = info.get("Flags", 0)
    if flags & ~INFO_FLAGS_KNOWN:
        v.append(Violation("unknown-info-flags", f"header Flags {flags:#x} has unknown bits {flags & ~INFO_FLAGS_KNOWN:#x}", 0x20))
    if info.get("BufferOffset", 0):
        v.append(Violation("buffer-offset", f"BufferOffset {info['BufferOffset']:#x} is set; its meaning is not known", 0x14))
    lst = info["BaseImageList"]
    if lst + 4 > size or lst < 0:
        v.append(Violation("base-list-bounds", f"BaseImageList {lst:#x} is outside the table's {size:#x} bytes", 0x0C))
        return
    (boff,) = struct.unpack_from("<I", raw, lst)
    if boff + HOT_PATCH_BASE.size > size:
        v.append(Violation("base-bounds", f"base descriptor at {boff:#x} is outside the table's {size:#x} bytes", lst))
        return
    base = HOT_PATCH_BASE.decode(raw, boff)
    rd.base_fields = base
    bflags = base["Flags"]
    if bflags & ~BASE_FLAGS_KNOWN:
        v.append(Violation("unknown-base-flags", f"base Flags {bflags:#x} has unknown bits {bflags & ~BASE_FLAGS_KNOWN:#x}", boff + 4))
    mflag = bflags & (0x4 | 0x8 | 0x10)
    if mflag and mflag != MACHINE_FLAG[machine]:
        named = MACHINE_OF_FLAG.get(mflag)
        v.append(Violation("machine-flag", f"base Flags name machine {named.value if named else hex(mflag)}, the patch image is {machine.value}", boff + 4))
    table = HotPatchTable(
        sequence=info["SequenceNumber"], base_timestamp=base["OriginalTimeDateStamp"],
        base_checksum=base["OriginalCheckSum"], base_flags=bflags, version=version,
        extra_words=extra, info_flags=flags, min_sequence=info.get("MinSequenceNumber", 0),
        base_sequence=base["SequenceNumber"],
        code_integrity=(base["CodeIntegrityInfo"], base["CodeIntegritySize"]))
    rd.table = table
    off = base["PatchTable"]
    stride = 4 * (2 + extra)
    while True:
        if off + 4 > size:
            v.append(Violation("no-terminator", f"the chunk list runs to {off:#x} without a 0 terminator inside the table's {size:#x} bytes", off))
            return
        (hdr,) = struct.unpack_from("<I", raw, off)
        if hdr == 0:
            if off + 4 != size:
                v.append(Violation("trailing-bytes", f"{size - off - 4} bytes follow the terminator inside Size", off))
            return
        count = hdr & CHUNK_COUNT_MASK
        rtype = hdr & CHUNK_TYPE_MASK
        inverse = bool(hdr & CHUNK_INVERSE)
        end = off + 4 + count * stride
        if end > size:
            v.append(Violation("chunk-bounds", f"chunk at {off:#x} ({count} records) runs past the table's {size:#x} bytes", off))
            return
        words = struct.unpack_from(f"<{count * (2 + extra)}I", raw, off + 4)
        recs = tuple(Record(words[i], words[i + 1], tuple(words[i + 2:i + 2 + extra]))
                     for i in range(0, len(words), 2 + extra))
        chunk = Chunk(rtype, inverse, recs, obligatory=bool(hdr & CHUNK_OBLIGATORY),
                      reserved=hdr & CHUNK_RESERVED, offset=off)
        table.chunks.append(chunk)
        v.extend(_chunk_rules(chunk, hdr))
        off = end


def _chunk_rules(c: Chunk, hdr: int) -> list[Violation]:
    out = []
    name = c.type_name
    if c.reserved:
        out.append(Violation("reserved-bits", f"chunk {name} header {hdr:#010x} sets reserved bits {c.reserved:#x}", c.offset))
    if c.obligatory:
        out.append(Violation("obligatory-chunk", f"chunk {name} sets the OBLIGATORY bit; the loader rejects such a table", c.offset))
    if c.type not in TYPE_NAMES:
        out.append(Violation("unknown-type", f"chunk type {c.type:#x} is not a known record type", c.offset))
    elif c.type not in APPLIED_TYPES:
        out.append(Violation("type-not-applied", f"{name} records are not applied by the loader", c.offset))
    if not c.inverse and c.type != FUNCTION:
        out.append(Violation("forward-not-function", f"a chunk without INVERSE must be FUNCTION, not {name}", c.offset))
    if c.type == INDIRECT and not c.inverse:
        out.append(Violation("indirect-not-inverse", "INDIRECT records must be INVERSE", c.offset))
    if not c.records:
        out.append(Violation("empty-chunk", f"chunk {name} has no records", c.offset))
    return out


def check_records(table: HotPatchTable, machine: Machine, *, patch_size: int,
                  base_size: int | None) -> list[Violation]:
    """The loader's bounds rules for every record: a site's write extent inside the site
    image, a target inside the referred image (forward: site in the base, target in the
    patch; inverse: the other way round).  A side whose size is None is not checked."""
    out: list[Violation] = []
    ptr = machine.pointer_size
    for c in table.chunks:
        site_size = patch_size if c.inverse else base_size
        ref_size = base_size if c.inverse else patch_size
        site_img = "patch" if c.inverse else "base"
        ref_img = "base" if c.inverse else "patch"
        d, n = write_extent(c.type, machine)
        for i, r in enumerate(c.records):
            at = c.offset + 4 + i * 4 * (2 + table.extra_words)
            if c.type & TYPE_SITE_RVA and site_size is not None and not (0 <= r.site + d and r.site + d + n <= site_size):
                out.append(Violation("site-outside-image", f"{c.type_name} record {i}: site {r.site:#x} (writing {n} bytes at {d:+d}) is outside the {site_img} image ({site_size:#x} bytes)", at))
            if c.type & TYPE_TARGET_RVA and ref_size is not None and r.target + ptr > ref_size:
                out.append(Violation("target-outside-image", f"{c.type_name} record {i}: target {r.target:#x} is outside the {ref_img} image ({ref_size:#x} bytes)", at))
            if c.type == FUNCTION and r.site < MIN_FUNCTION_SITE:
                out.append(Violation("function-site-low", f"{c.type_name} record {i}: site {r.site:#x} is below {MIN_FUNCTION_SITE:#x}", at))
    return out
