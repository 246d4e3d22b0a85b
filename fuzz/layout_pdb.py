"""The layout of a PDB file (MSF 7.0): superblock, stream directory, the PDB info, DBI
(module list, section contributions, optional debug headers), TPI/IPI headers and type
records (with their type-index references), and symbol records of the module and
symbol-record streams.
"""

from __future__ import annotations

import struct

from .layout_model import Field, Layout, TypeRef, u16, u32

_DBI_HEADER = [("VersionSignature", 0, 4), ("VersionHeader", 4, 4), ("Age", 8, 4),
               ("GlobalStreamIndex", 12, 2), ("BuildNumber", 14, 2), ("PublicStreamIndex", 16, 2),
               ("PdbDllVersion", 18, 2), ("SymRecordStream", 20, 2), ("PdbDllRbld", 22, 2),
               ("ModInfoSize", 24, 4), ("SectionContributionSize", 28, 4),
               ("SectionMapSize", 32, 4), ("SourceInfoSize", 36, 4), ("TypeServerMapSize", 40, 4),
               ("MFCTypeServerIndex", 44, 4), ("OptionalDbgHeaderSize", 48, 4),
               ("ECSubstreamSize", 52, 4), ("Flags", 56, 2), ("Machine", 58, 2)]
_MODI = [("SC.Section", 4, 2), ("SC.Offset", 8, 4), ("SC.Size", 12, 4), ("SC.Module", 20, 2),
         ("Flags", 32, 2), ("ModuleSymStream", 34, 2), ("SymByteSize", 36, 4),
         ("C11ByteSize", 40, 4), ("C13ByteSize", 44, 4), ("SourceFileCount", 48, 2)]
_SC_ENTRY = [("Section", 0, 2), ("Offset", 4, 4), ("Size", 8, 4), ("Characteristics", 12, 4),
             ("ModuleIndex", 16, 2)]
_TPI_HEADER = [("Version", 0, 4), ("HeaderSize", 4, 4), ("TypeIndexBegin", 8, 4),
               ("TypeIndexEnd", 12, 4), ("TypeRecordBytes", 16, 4), ("HashStreamIndex", 20, 2),
               ("HashAuxStreamIndex", 22, 2), ("HashKeySize", 24, 4), ("NumHashBuckets", 28, 4)]
_INFO = [("Version", 0, 4), ("Signature", 4, 4), ("Age", 8, 4), ("Guid.Data1", 12, 4)]
_STREAM_HINTS = (0, 1, 2, 3, 4, 5, 0xFFFE, 0xFFFF)
# Where a type record's size/count numeric leaf starts (body offset) per leaf kind, and
# the numeric leaf kinds (LF_CHAR 0x8000 ... LF_UTF8STRING 0x801B) worth trying there.
NUMERIC_AT = {0x1504: 16, 0x1505: 16, 0x1506: 8, 0x1503: 8}
NUMERIC_LEAVES = (*range(0x8000, 0x801C), 0x7FFF, 0xFFFF)


class _Stream:
    """Maps offsets inside one MSF stream to file offsets."""

    def __init__(self, blocks: list[int], size: int, bs: int):
        self.blocks, self.size, self.bs = blocks, size, bs

    def at(self, so: int, width: int = 1) -> int | None:
        if so < 0 or so + width > self.size or so // self.bs >= len(self.blocks):
            return None
        if (so % self.bs) + width > self.bs:  # the field straddles two blocks
            return None
        return self.blocks[so // self.bs] * self.bs + so % self.bs


def _add_in(lay: Layout, st: _Stream, group: str, name: str, so: int, width: int,
            hints: tuple[int, ...] = ()) -> None:
    off = st.at(so, width)
    if off is not None:
        lay.add(group, name, off, width, hints)


def pdb_layout(data: bytes) -> Layout:
    from pehotpatch.image.pdb.dbi import parse_dbi
    from pehotpatch.image.pdb.msf import Msf

    lay = Layout("pdb", len(data))
    msf = Msf(data, "<seed>")
    bs = msf.block_size
    sb = msf.superblock
    nstreams = msf.num_streams
    lay.hints = (len(data) // bs, len(data) // bs - 1, sb.num_blocks, bs, nstreams)
    lay.add_struct("pdb.msf", "SuperBlock", 32, [
        ("BlockSize", 0, 4), ("FreeBlockMapBlock", 4, 4), ("NumBlocks", 8, 4),
        ("NumDirectoryBytes", 12, 4), ("Unknown", 16, 4), ("BlockMapAddr", 20, 4)], {
        "BlockSize": (512, 1024, 2048, 4096, 8192, 0, 4095, bs * 2),
        "NumBlocks": (0, 1, sb.num_blocks - 1, sb.num_blocks + 1, len(data) // bs + 2, 0xFFFFFFFF),
        "NumDirectoryBytes": (0, 3, 4, 8, sb.num_directory_bytes - 4, sb.num_directory_bytes + 4,
                              len(data), len(data) + 1, 0xFFFFFFFF),
        "BlockMapAddr": (0, 1, 2, sb.num_blocks - 1, sb.num_blocks, 0xFFFFFFFF),
    })
    lay.cuts += [32, 56, bs, bs * 2, sb.block_map_addr * bs]
    ndir = sb.num_directory_bytes
    map_off = sb.block_map_addr * bs
    dir_blocks = [u32(data, map_off + 4 * i) for i in range(-(-ndir // bs))]
    block_hints = (0, 1, 2, sb.block_map_addr, sb.num_blocks - 1, sb.num_blocks, 0xFFFFFFFF,
                   *dir_blocks[:2])
    for i in range(len(dir_blocks)):
        lay.add("pdb.msf", f"BlockMap[{i}]", map_off + 4 * i, 4, block_hints)
    directory = _Stream(dir_blocks, ndir, bs)
    _add_in(lay, directory, "pdb.directory", "NumStreams", 0, 4,
            (0, 1, 2, 3, 4, 5, nstreams - 1, nstreams + 1, 0x40000000, 0xFFFFFFFF))
    pos = 4 + 4 * nstreams
    streams: list[_Stream] = []
    for i in range(nstreams):
        size = msf.stream_sizes[i]
        _add_in(lay, directory, "pdb.directory", f"StreamSize[{i}]", 4 + 4 * i, 4,
                (0, 1, 0xFFFFFFFF, size - 1, size + 1, size + bs, size * 2, len(data)))
        blocks = msf.stream_blocks(i)
        if blocks:
            for j in (0, len(blocks) - 1):
                _add_in(lay, directory, "pdb.directory", f"Stream[{i}].Block[{j}]", pos + 4 * j, 4,
                        block_hints + (blocks[0] + 1,))
        pos += 4 * len(blocks)
        streams.append(_Stream(blocks, size, bs))
        for b in blocks:
            lay.regions.append((f"stream {i}", b * bs, min(bs, len(data) - b * bs)))
            lay.cuts.append(b * bs)
    for b in dir_blocks:
        lay.regions.append(("directory", b * bs, bs))

    if nstreams > 1:
        st = streams[1]
        for name, so, width in _INFO:
            _add_in(lay, st, "pdb.info", f"Info.{name}", so, width, (0, 1, 20000404, 0xFFFFFFFF))
        _add_in(lay, st, "pdb.info", "NamedStreamMap.StringBytes", 28, 4,
                (0, 1, 0x7FFFFFFF, 0xFFFFFFFF, st.size))
        if st.size >= 32:
            info = msf.stream(1)
            after = 32 + u32(info, 28)
            for k, name in enumerate(("Size", "Capacity", "PresentWords")):
                _add_in(lay, st, "pdb.info", f"NamedStreamMap.{name}", after + 4 * k, 4,
                        (0, 1, 0xFF, 0x7FFFFFFF, 0xFFFFFFFF))
    for idx, what in ((2, "tpi"), (4, "ipi")):
        if idx < nstreams and streams[idx].size >= 56:
            _tpi_layout(lay, msf.stream(idx), streams[idx], f"pdb.{what}")
    if nstreams > 3 and streams[3].size >= 64:
        dbi_bytes = msf.stream(3)
        st = streams[3]
        size_hints = (0, 1, 2, 3, 4, 0xFFFFFFFF, 0x7FFFFFFF, st.size)
        for name, so, width in _DBI_HEADER:
            _add_in(lay, st, "pdb.dbi", f"Dbi.{name}", so, width,
                    _STREAM_HINTS + (nstreams, nstreams - 1) if width == 2 else size_hints)
        dbi = parse_dbi(dbi_bytes, "<seed>")
        _dbi_layout(lay, dbi_bytes, st, nstreams)
        for m in dbi.modules:
            if m.has_symbols and m.sym_stream < nstreams:
                symbols_in_stream(lay, msf.stream(m.sym_stream), streams[m.sym_stream], 4,
                                   m.sym_byte_size, "pdb.modsyms")
        sh = dbi.debug_stream(5)  # the image's section headers: segment:offset -> RVA
        if sh is not None and sh < nstreams:
            for j in range(min(streams[sh].size // 40, 32)):
                for name, so in (("VirtualSize", 8), ("VirtualAddress", 12)):
                    _add_in(lay, streams[sh], "pdb.sectionheaders", f"SectionHeader[{j}].{name}",
                            40 * j + so, 4, (0, 0x1000, 0x7FFFFFFF, 0xFFFFFFFF, 0xFFFFF000))
        srs = dbi.header.sym_record_stream
        if srs < nstreams:
            symbols_in_stream(lay, msf.stream(srs), streams[srs], 0, streams[srs].size,
                               "pdb.globals")
    return lay


def _dbi_layout(lay: Layout, dbi: bytes, st: _Stream, nstreams: int) -> None:
    pos = 64
    end = pos + u32(dbi, 24)
    k = 0
    while pos + 64 <= end:
        for name, off, width in _MODI:
            hints = _STREAM_HINTS + (nstreams,) if name == "ModuleSymStream" else (
                0, 1, 3, 4, 5, 0x7FFFFFFF, 0xFFFFFFFF)
            _add_in(lay, st, "pdb.dbi.modules", f"Module[{k}].{name}", pos + off, width, hints)
        p = pos + 64
        for _ in range(2):  # module name, object name
            nul = dbi.find(b"\0", p, end)
            if nul < 0:
                return
            at = st.at(nul)
            if at is not None:
                lay.terminators.append(at)
            p = nul + 1
        pos = (p + 3) & ~3
        k += 1
    sc_size = u32(dbi, 28)
    if sc_size >= 4:
        version = u32(dbi, end)
        stride = 32 if version == 0xEFFE0000 + 20140516 else 28
        for j in range(min((sc_size - 4) // stride, 64)):
            for name, off, width in _SC_ENTRY:
                _add_in(lay, st, "pdb.dbi.contribs", f"SC[{j}].{name}", end + 4 + stride * j + off,
                        width, (0, 1, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF))
        _add_in(lay, st, "pdb.dbi.contribs", "SC.Version", end, 4,
                (0xEFFE0000 + 19970605, 0xEFFE0000 + 20140516, 0))
    sm = end + sc_size
    _add_in(lay, st, "pdb.dbi", "SectionMap.Count", sm, 2, (0, 1, 0xFFFF))
    # optional debug header: stream numbers of the section headers, OMAP...
    opt_size = u32(dbi, 48)
    opt = 64 + sum(u32(dbi, o) for o in (24, 28, 32, 36, 40, 52))
    if opt_size and opt + opt_size <= len(dbi):
        for j in range(opt_size // 2):
            _add_in(lay, st, "pdb.dbi.debugheader", f"DbgStream[{j}]", opt + 2 * j, 2,
                    _STREAM_HINTS + (nstreams - 1, nstreams, 1, 2, 3))


def _tpi_layout(lay: Layout, tpi: bytes, st: _Stream, group: str) -> None:
    header_size = u32(tpi, 4)
    begin, end_ti, nbytes = u32(tpi, 8), u32(tpi, 12), u32(tpi, 16)
    for name, so, width in _TPI_HEADER:
        _add_in(lay, st, group, f"Header.{name}", so, width,
                (0, 0xFFF, 0x1000, 0x1001, begin + 1, end_ti - 1, end_ti + 1, 0x7FFFFFFF,
                 0xFFFFFFFF, nbytes - 1, nbytes + 4, 56, 55, 57, 20040203, 0xFFFF))
    pos = header_size
    stop = min(len(tpi), header_size + nbytes)
    ti = begin
    records: dict[int, tuple[int, int]] = {}
    while pos + 4 <= stop:
        reclen = u16(tpi, pos)
        if reclen < 2:
            break
        records[ti] = (pos, pos + 2 + reclen)
        _add_in(lay, st, f"{group}.records", f"type {ti:#x}.RecordLength", pos, 2,
                (0, 1, 2, 3, reclen - 2, reclen + 2, reclen + 4, 0xFFFF))
        _add_in(lay, st, f"{group}.records", f"type {ti:#x}.Kind", pos + 2, 2,
                (0x1001, 0x1002, 0x1008, 0x1201, 0x1203, 0x1503, 0x1504, 0x1505, 0x1506, 0x1601,
                 0x1602, 0x1605, 0x150D, 0x1507, 0x1003, 0x1205))
        at = NUMERIC_AT.get(u16(tpi, pos + 2))
        if at is not None and pos + 4 + at + 2 <= pos + 2 + reclen:
            _add_in(lay, st, f"{group}.numeric", f"type {ti:#x}.numeric", pos + 4 + at, 2,
                    NUMERIC_LEAVES)
        pos += 2 + reclen
        ti += 1
    cut = st.at(header_size)
    if cut is not None:
        lay.cuts.append(cut)
    # Type-index references: any 16-bit-aligned u32 in a record naming an existing type.
    for owner, (rpos, rend) in records.items():
        for so in range(rpos + 4, rend - 3, 2):
            target = u32(tpi, so)
            if begin <= target < ti:
                off = st.at(so, 4)
                if off is None:
                    continue
                f = Field(f"type {owner:#x}+{so - rpos:#x} -> {target:#x}", off, 4,
                          (owner, begin, ti - 1, ti, 0xFFFFFF, 0x7FFFFFFF))
                lay.type_refs.append(TypeRef(f, owner, target))
                lay.add(f"{group}.refs", f.name, off, 4, f.hints)


_PROC_KINDS = frozenset({0x1110, 0x110F, 0x1147, 0x1146, 0x1155, 0x1156})
_DATA_KINDS = frozenset({0x110C, 0x110D, 0x1112, 0x1113})


def symbols_in_stream(lay: Layout, buf: bytes, st: _Stream | None, start: int, end: int,
                       group: str, base: int = 0) -> None:
    """Fields of the symbol records in ``buf[start:end]`` (a PDB stream via ``st``, or a
    COFF section's bytes at file offset ``base`` when ``st`` is None)."""

    def at(so: int, width: int) -> int | None:
        if st is not None:
            return st.at(so, width)
        return base + so if so + width <= len(buf) else None

    def add(name: str, so: int, width: int, hints: tuple[int, ...]) -> None:
        off = at(so, width)
        if off is not None:
            lay.add(group, name, off, width, hints)

    pos = start
    offsets: list[int] = []
    end = min(end, len(buf))
    while pos + 4 <= end and len(offsets) < 3000:
        reclen, kind = struct.unpack_from("<HH", buf, pos)
        if reclen < 2 or pos + 2 + reclen > end:
            break
        offsets.append(pos)
        pos += 2 + reclen
    ptr_hints = (0, 1, 4, end, end - 4, 0xFFFFFFFF, *offsets[:3], *offsets[-3:])
    for pos in offsets:
        reclen, kind = struct.unpack_from("<HH", buf, pos)
        body = pos + 4
        add(f"sym@{pos:#x}.RecordLength", pos, 2, (0, 1, 2, 3, reclen - 1, reclen + 2, 0xFFFF))
        add(f"sym@{pos:#x}.Kind", pos + 2, 2, (0x0006, 0x114F, 0x1110, 0x1147, 0x110D, 0x114D,
                                                 0x114E, 0x1169, 0x113C, 0x1102, 0x1103))
        if kind in _PROC_KINDS:
            for name, o, w in (("Parent", 0, 4), ("End", 4, 4), ("Next", 8, 4), ("Length", 12, 4),
                               ("TypeIndex", 24, 4), ("Offset", 28, 4), ("Segment", 32, 2)):
                add(f"proc@{pos:#x}.{name}", body + o, w,
                    ptr_hints if o < 12 else (0, 1, 0x1000, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF))
        elif kind in _DATA_KINDS:
            for name, o, w in (("TypeIndex", 0, 4), ("Offset", 4, 4), ("Segment", 8, 2)):
                add(f"data@{pos:#x}.{name}", body + o, w, (0, 0x1000, 0x1001, 0x7FFFFFFF, 0xFFFF))
        else:
            for o in range(0, min(reclen - 2, 16), 4):
                add(f"sym@{pos:#x}+{o}", body + o, 4, ptr_hints)
        rec_end = pos + 2 + reclen
        nul = buf.rfind(b"\0", body, rec_end)
        if nul >= 0:
            off = at(nul, 1)
            if off is not None:
                lay.terminators.append(off)
