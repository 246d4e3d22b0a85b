"""MSF container, info stream and DBI stream on hand-made and committed inputs."""

from __future__ import annotations

import struct
import uuid
from pathlib import Path

import pytest

from pehotpatch.errors import FormatError, InputError
from pehotpatch.image.pdb import load_pdb
from pehotpatch.image.pdb.dbi import DBG_SECTION_HDR, parse_dbi
from pehotpatch.image.pdb.info import FEATURE_VC140, parse_info
from pehotpatch.image.pdb.msf import MSF7_MAGIC, Msf
from pehotpatch.image.pdb.tpi import parse_tpi

DATA = Path(__file__).resolve().parent / "data" / "pdb"
SAMPLE = DATA / "sample_x64.pdb"


def build_msf(streams: list[bytes | None], bs: int = 512, scramble: bool = True) -> bytes:
    """A minimal MSF 7.0 file; stream blocks are handed out back to front when ``scramble``."""
    nblocks_data = sum(-(-len(s) // bs) for s in streams if s)
    first = 3  # 0 superblock, 1-2 free block maps
    pool = list(range(first, first + nblocks_data))
    if scramble:
        pool.reverse()
    blocks: list[list[int]] = []
    for s in streams:
        n = -(-len(s) // bs) if s else 0
        blocks.append([pool.pop(0) for _ in range(n)])
    directory = struct.pack("<I", len(streams))
    directory += b"".join(struct.pack("<I", 0xFFFFFFFF if s is None else len(s)) for s in streams)
    directory += b"".join(struct.pack(f"<{len(b)}I", *b) for b in blocks)
    dir_nblocks = -(-len(directory) // bs)
    dir_blocks = list(range(first + nblocks_data, first + nblocks_data + dir_nblocks))
    map_block = first + nblocks_data + dir_nblocks
    total = map_block + 1
    out = bytearray(total * bs)
    out[: len(MSF7_MAGIC)] = MSF7_MAGIC
    struct.pack_into("<6I", out, len(MSF7_MAGIC), bs, 1, total, len(directory), 0, map_block)
    for s, bl in zip(streams, blocks, strict=True):
        for i, b in enumerate(bl):
            chunk = s[i * bs : (i + 1) * bs]
            out[b * bs : b * bs + len(chunk)] = chunk
    for i, b in enumerate(dir_blocks):
        chunk = directory[i * bs : (i + 1) * bs]
        out[b * bs : b * bs + len(chunk)] = chunk
    struct.pack_into(f"<{dir_nblocks}I", out, map_block * bs, *dir_blocks)
    return bytes(out)


def test_streams_reassembled_from_scattered_blocks():
    streams = [b"", bytes(range(256)) * 5, None, b"x" * 512, b"tail" * 300]
    msf = Msf(build_msf(streams), "t.pdb")
    assert msf.num_streams == 5
    assert msf.block_size == 512
    for i, s in enumerate(streams):
        assert msf.stream(i) == (s or b"")
    assert msf.stream_size(2) == 0 and not msf.has_stream(2)
    assert msf.stream_blocks(1) == sorted(msf.stream_blocks(1), reverse=True)


def test_directory_spanning_several_blocks():
    streams = [bytes([i % 256]) * (i + 1) for i in range(300)]  # 300 sizes + 300 block numbers
    data = build_msf(streams, scramble=False)
    msf = Msf(data)
    assert [msf.stream(i) for i in range(300)] == streams


def test_stream_index_out_of_range():
    msf = Msf(build_msf([b"a"]), "t.pdb")
    with pytest.raises(FormatError, match="does not exist"):
        msf.stream(5)


def _patch(data: bytes, off: int, fmt: str, *values) -> bytes:
    b = bytearray(data)
    struct.pack_into(fmt, b, off, *values)
    return bytes(b)


SB = len(MSF7_MAGIC)


@pytest.mark.parametrize(
    "mutate, error, message",
    [
        (lambda d: b"MZ" + d[2:], InputError, "not a PDB"),
        (
            lambda d: b"Microsoft C/C++ program database 2.00\r\n\x1aJG\0\0" + d[44:],
            InputError,
            "2.0",
        ),
        (lambda d: b"Microsoft MSFZ Container\0" + d[25:], InputError, "MSFZ"),
        (lambda d: d[:40], FormatError, "truncated"),
        (lambda d: _patch(d, SB, "<I", 1000), FormatError, "block size"),
        (lambda d: _patch(d, SB + 8, "<I", 10**6), FormatError, "block count"),
        (lambda d: _patch(d, SB + 12, "<I", 10**9), FormatError, "directory size"),
        (lambda d: _patch(d, SB + 20, "<I", 10**6), FormatError, "block map"),
        (lambda d: d[: len(d) - 512], FormatError, "outside the file"),
    ],
)
def test_bad_superblock(mutate, error, message):
    data = build_msf([b"abc", b"defg" * 200])
    with pytest.raises(error, match=message):
        Msf(mutate(data), "t.pdb")


def test_absurd_stream_count_and_block_numbers():
    data = build_msf([b"abc", b"defg" * 200], scramble=False)
    msf = Msf(data)
    bs = msf.block_size
    map_block = msf.superblock.block_map_addr
    dir_block = struct.unpack_from("<I", data, map_block * bs)[0]
    with pytest.raises(FormatError, match="do not fit"):
        Msf(_patch(data, dir_block * bs, "<I", 0x7FFFFFFF))
    # the first block number of stream 0 (after count and 2 sizes)
    with pytest.raises(FormatError, match="outside the file"):
        Msf(_patch(data, dir_block * bs + 12, "<I", 0xFFFFFF))
    with pytest.raises(FormatError, match="run past"):
        Msf(_patch(data, dir_block * bs + 8, "<I", 0x7FFFFFF0))


def test_info_stream_of_sample():
    msf = Msf.open(str(SAMPLE))
    info = parse_info(msf.stream(1), "t.pdb")
    assert info.version == 20000404
    assert info.age == 1
    assert isinstance(info.guid, uuid.UUID)
    assert "/names" in info.named_streams
    assert FEATURE_VC140 in info.features and info.has_ipi
    assert 0 not in info.features


@pytest.mark.parametrize("cut", [0, 10, 27, 30, 40])
def test_info_stream_truncated(cut):
    msf = Msf.open(str(SAMPLE))
    data = msf.stream(1)
    with pytest.raises(FormatError):
        parse_info(data[:cut], "t.pdb")
    # a stream that ends right after the 28-byte header has no named streams
    assert parse_info(data[:28], "t.pdb").named_streams == {}


def test_info_stream_bad_named_map():
    data = Msf.open(str(SAMPLE)).stream(1)
    with pytest.raises(FormatError, match="string buffer"):
        parse_info(_patch(data, 28, "<I", 0xFFFFFF), "t.pdb")
    with pytest.raises(FormatError, match="not supported"):
        parse_info(_patch(data, 0, "<I", 19941610), "t.pdb")


def test_dbi_of_sample():
    msf = Msf.open(str(SAMPLE))
    dbi = parse_dbi(msf.stream(3), "t.pdb")
    assert dbi.machine == 0x8664
    assert dbi.header.age == 1
    assert [m.module_name for m in dbi.modules][-1] == "* Linker *"
    assert dbi.modules[0].obj_name.endswith("sample_x64.obj")
    assert dbi.modules[0].has_symbols
    assert dbi.debug_stream(DBG_SECTION_HDR) is not None
    assert dbi.debug_stream(99) is None
    assert len(dbi.section_map) == len(load_pdb(SAMPLE).sections) + 1
    code = [c for c in dbi.section_contributions if c.section == 1 and c.size]
    assert code and dbi.module_of(1, code[0].offset) == code[0].module_index
    assert dbi.module_of(1, 10**7) is None
    assert dbi.module_of(99, 0) is None


@pytest.mark.parametrize(
    "offset, fmt, value, message",
    [
        (0, "<i", 0, "signature"),
        (4, "<I", 19960307, "not supported"),
        (24, "<i", 1 << 30, "module info substream"),
        (28, "<i", -4, "section contribution substream"),
        (48, "<i", 1 << 30, "optional debug header"),
    ],
)
def test_dbi_bad_header(offset, fmt, value, message):
    data = Msf.open(str(SAMPLE)).stream(3)
    with pytest.raises(FormatError, match=message):
        parse_dbi(_patch(data, offset, fmt, value), "t.pdb")


def test_tpi_header_checks():
    data = Msf.open(str(SAMPLE)).stream(2)
    tpi = parse_tpi(data, "t.pdb")
    assert tpi.header.type_index_begin == 0x1000
    assert len(tpi.records) == tpi.header.record_count
    with pytest.raises(FormatError, match="version"):
        parse_tpi(_patch(data, 0, "<I", 1), "t.pdb")
    with pytest.raises(FormatError, match="index range"):
        parse_tpi(_patch(data, 8, "<I", 5), "t.pdb")
    with pytest.raises(FormatError, match="run past"):
        parse_tpi(_patch(data, 16, "<I", 1 << 30), "t.pdb")
    with pytest.raises(FormatError, match="claims"):
        parse_tpi(_patch(data, 12, "<I", 0x7FFFFFFF), "t.pdb")
    with pytest.raises(FormatError, match="header says"):
        len(parse_tpi(_patch(data, 12, "<I", tpi.header.type_index_end - 1), "t.pdb").records)


def test_load_pdb_errors(tmp_path):
    with pytest.raises(InputError, match="cannot read"):
        load_pdb(tmp_path / "missing.pdb")
    p = tmp_path / "x.pdb"
    p.write_bytes(b"\0" * 100)
    with pytest.raises(InputError, match="not a PDB"):
        load_pdb(p)
    only_info = build_msf([b"", b""])
    p.write_bytes(only_info)
    with pytest.raises(FormatError, match="info stream"):
        load_pdb(p)


def test_type_only_pdb(tmp_path):
    """A PDB with info and TPI streams only (no DBI): types, no symbols."""
    msf = Msf.open(str(SAMPLE))
    streams = [b"", msf.stream(1), msf.stream(2), b"", msf.stream(4)]
    p = tmp_path / "types.pdb"
    p.write_bytes(build_msf(streams))
    pdb = load_pdb(p)
    assert pdb.modules == [] and pdb.procedures == [] and pdb.machine is None
    assert pdb.types.udt_by_name("ring") is not None
    assert pdb.types.layout(pdb.types.udt_by_name("ring")).size == 152


def _sym(kind: int, body: bytes) -> bytes:
    body += b"\0" * ((-len(body) - 4) % 4)
    return struct.pack("<HH", len(body) + 2, kind) + body


def test_pdb_that_keeps_hotpatchfunc_records(tmp_path):
    """MSVC's linker keeps S_HOTPATCHFUNC in the module stream (lld drops it): emulate that.

    The sample's module stream gets two records: one naming a procedure directly, one by a
    decorated linker name that only a public symbol (added at the procedure's address)
    connects to the procedure.
    """
    msf = Msf.open(str(SAMPLE))
    streams = [msf.stream(i) if msf.stream_sizes[i] else b"" for i in range(msf.num_streams)]
    dbi = parse_dbi(streams[3])
    mod = dbi.modules[0]
    pdb = load_pdb(SAMPLE)
    target = next(p for p in pdb.procedures if p.name == "telemetry_push")
    decorated = "?telemetry_push@@YAHPEAUring@@I@Z"
    extra = _sym(0x1169, struct.pack("<I", 0x1001) + b"patched\0") + _sym(
        0x1169, struct.pack("<I", 0x1002) + decorated.encode() + b"\0"
    )
    ms = streams[mod.sym_stream]
    streams[mod.sym_stream] = ms[: mod.sym_byte_size] + extra + ms[mod.sym_byte_size :]
    dbi_bytes = bytearray(streams[3])
    struct.pack_into("<I", dbi_bytes, 64 + 36, mod.sym_byte_size + len(extra))
    streams[3] = bytes(dbi_bytes)
    pub = _sym(
        0x110E, struct.pack("<IIH", 2, target.offset, target.segment) + decorated.encode() + b"\0"
    )
    srs = dbi.header.sym_record_stream
    streams[srs] = streams[srs] + pub
    p = tmp_path / "msvc-like.pdb"
    p.write_bytes(build_msf(streams, bs=4096, scramble=False))
    got = load_pdb(p)
    assert got.hotpatch_functions == {"patched", decorated}
    assert {q.name for q in got.procedures if q.hotpatch_marked} == {"patched", "telemetry_push"}
    assert [q.rva for q in got.publics if q.name == decorated] == [target.rva]


def test_omap_maps_symbol_addresses(tmp_path):
    """A PDB of an image rearranged after linking: symbols go through OMAP-from-source."""
    msf = Msf.open(str(SAMPLE))
    streams = [msf.stream(i) if msf.stream_sizes[i] else b"" for i in range(msf.num_streams)]
    plain = load_pdb(SAMPLE)
    helper = next(p for p in plain.procedures if p.name == "helper")
    shift = 0x40000
    pairs = [(0, 0)]
    for s in plain.sections:
        pairs.append((s.virtual_address, s.virtual_address + shift))
    pairs += [(helper.rva, 0), (helper.rva + helper.size, helper.rva + helper.size + shift)]
    pairs.sort()
    omap_stream = len(streams)
    streams.append(b"".join(struct.pack("<II", a, b) for a, b in pairs))
    streams.append(streams[parse_dbi(streams[3]).debug_stream(DBG_SECTION_HDR)])  # originals
    dbi = bytearray(streams[3])
    dbg = len(dbi) - struct.unpack_from("<i", dbi, 48)[0]
    struct.pack_into("<H", dbi, dbg + 2 * 4, omap_stream)  # OmapFromSrc
    struct.pack_into("<H", dbi, dbg + 2 * 10, omap_stream + 1)  # SectionHdrOrig
    streams[3] = bytes(dbi)
    p = tmp_path / "omap.pdb"
    p.write_bytes(build_msf(streams, bs=4096, scramble=False))
    got = load_pdb(p)
    assert got.omap is not None and len(got.omap) == len(pairs)
    before = {q.name: q.rva for q in plain.procedures}
    after = {q.name: q.rva for q in got.procedures}
    assert after["helper"] is None  # mapped to 0: dropped from the final image
    for name, rva in before.items():
        if name != "helper":
            assert after[name] == rva + shift
    assert {d.name: d.rva for d in got.globals_} == {d.name: d.rva + shift for d in plain.globals_}
    pub = next(q for q in got.publics if q.name == "telemetry_push")
    assert got.rva_of(pub.segment, pub.offset) == pub.rva == before["telemetry_push"] + shift


def test_omap_table_checks():
    from pehotpatch.image.pdb.omap import Omap

    with pytest.raises(FormatError, match="multiple of 8"):
        Omap(b"\0" * 12)
    with pytest.raises(FormatError, match="not sorted"):
        Omap(struct.pack("<4I", 0x2000, 1, 0x1000, 2))
    om = Omap(struct.pack("<6I", 0x1000, 0x5000, 0x1800, 0, 0x2000, 0x9000))
    assert om.map(0x1004) == 0x5004
    assert om.map(0x1810) is None
    assert om.map(0x2100) == 0x9100
    assert om.map(0x10) is None
    assert om.map(None) is None
