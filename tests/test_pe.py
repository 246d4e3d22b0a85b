"""The PE image model agrees with pefile (an independent reader) on real images."""

from __future__ import annotations

import pefile
import pytest

from pehotpatch.image.machine import Machine
from pehotpatch.image.pe_reader import load_pe, parse_pe

MACHINES = {0x8664: Machine.X64, 0x14C: Machine.X86, 0xAA64: Machine.ARM64}


def _pefile(path):
    pe = pefile.PE(str(path), fast_load=True)
    pe.parse_data_directories(
        directories=[
            pefile.DIRECTORY_ENTRY[n]
            for n in (
                "IMAGE_DIRECTORY_ENTRY_EXPORT",
                "IMAGE_DIRECTORY_ENTRY_IMPORT",
                "IMAGE_DIRECTORY_ENTRY_DELAY_IMPORT",
                "IMAGE_DIRECTORY_ENTRY_BASERELOC",
                "IMAGE_DIRECTORY_ENTRY_EXCEPTION",
                "IMAGE_DIRECTORY_ENTRY_DEBUG",
                "IMAGE_DIRECTORY_ENTRY_TLS",
                "IMAGE_DIRECTORY_ENTRY_LOAD_CONFIG",
            )
        ]
    )
    return pe


def assert_agrees_with_pefile(path):
    img = load_pe(path)
    pe = _pefile(path)
    assert img.machine is MACHINES[pe.FILE_HEADER.Machine]
    assert img.timestamp == pe.FILE_HEADER.TimeDateStamp
    assert img.checksum == pe.OPTIONAL_HEADER.CheckSum
    assert img.checksum_computed == pe.generate_checksum()
    assert img.image_base == pe.OPTIONAL_HEADER.ImageBase
    assert img.entry_rva == pe.OPTIONAL_HEADER.AddressOfEntryPoint
    assert [(s.name, s.rva, s.virtual_size, s.raw_size, s.characteristics) for s in img.sections] == [
        (
            s.Name.rstrip(b"\0").decode("latin-1"),
            s.VirtualAddress,
            s.Misc_VirtualSize,
            s.SizeOfRawData,
            s.Characteristics,
        )
        for s in pe.sections
    ]
    if hasattr(pe, "DIRECTORY_ENTRY_EXPORT"):
        theirs = sorted(
            (e.ordinal, e.name.decode() if e.name else None, e.forwarder.decode() if e.forwarder else None)
            for e in pe.DIRECTORY_ENTRY_EXPORT.symbols
        )
        ours = sorted((e.ordinal, e.name, e.forwarder) for e in img.exports)
        assert ours == theirs
        addr = {e.ordinal: e.address for e in pe.DIRECTORY_ENTRY_EXPORT.symbols if not e.forwarder}
        assert {e.ordinal: e.rva for e in img.exports if not e.forwarder} == addr
    else:
        assert img.exports == []
    theirs_imp = set()
    for entry in getattr(pe, "DIRECTORY_ENTRY_IMPORT", []):
        for imp in entry.imports:
            theirs_imp.add(
                (
                    entry.dll.decode(),
                    None if imp.import_by_ordinal else imp.name.decode(),
                    imp.ordinal if imp.import_by_ordinal else None,
                    imp.address - pe.OPTIONAL_HEADER.ImageBase,
                )
            )
    ours_imp = {(i.dll, i.name, i.ordinal, i.iat_rva) for i in img.imports if not i.delayed}
    assert ours_imp == theirs_imp
    relocs = sorted(
        e.rva
        for block in getattr(pe, "DIRECTORY_ENTRY_BASERELOC", [])
        for e in block.entries
        if e.type != 0
    )
    assert img.relocations.rvas == relocs
    if img.machine is Machine.X64 and hasattr(pe, "DIRECTORY_ENTRY_EXCEPTION"):
        theirs_fn = sorted({(e.struct.BeginAddress, e.struct.EndAddress) for e in pe.DIRECTORY_ENTRY_EXCEPTION})
        assert sorted((f.begin, f.end) for f in img.functions) == theirs_fn
    if hasattr(pe, "DIRECTORY_ENTRY_LOAD_CONFIG"):
        lc = pe.DIRECTORY_ENTRY_LOAD_CONFIG.struct
        assert img.load_config is not None
        assert img.load_config.size == lc.Size
        if hasattr(lc, "HotPatchTableOffset"):
            assert img.load_config.hotpatch_table_offset == lc.HotPatchTableOffset
    else:
        assert img.load_config is None
    cv = [d for d in getattr(pe, "DIRECTORY_ENTRY_DEBUG", []) if d.struct.Type == 2]
    if cv and hasattr(cv[0].entry, "Signature_String"):
        assert img.codeview is not None
        assert img.codeview.age == cv[0].entry.Age
    tls = getattr(pe, "DIRECTORY_ENTRY_TLS", None)
    if tls is not None and tls.struct.AddressOfCallBacks:
        ptr = 8 if pe.OPTIONAL_HEADER.Magic == 0x20B else 4
        rva = tls.struct.AddressOfCallBacks - pe.OPTIONAL_HEADER.ImageBase
        expected = []
        while True:
            va = pe.get_qword_at_rva(rva) if ptr == 8 else pe.get_dword_at_rva(rva)
            if not va:
                break
            expected.append(va - pe.OPTIONAL_HEADER.ImageBase)
            rva += ptr
        assert img.tls_callbacks == expected
    sec = pe.OPTIONAL_HEADER.DATA_DIRECTORY[4]
    assert img.has_signature == bool(sec.VirtualAddress and sec.Size)
    return img


def test_msvc_runtime_dlls_agree_with_pefile(msvc_dlls):
    assert len(msvc_dlls) >= 10
    seen_lc = 0
    for path in msvc_dlls:
        img = assert_agrees_with_pefile(path)
        assert img.machine is Machine.X64 and img.is_dll
        assert img.has_signature  # the runtime DLLs are Authenticode-signed
        assert img.functions, path
        seen_lc += img.load_config is not None and img.load_config.size == 0x140
    assert seen_lc == len(msvc_dlls)


def test_read_maps_rvas_through_sections(msvc_dlls):
    img = load_pe(msvc_dlls[0])
    text = img.section_named(".text")
    assert text is not None
    assert img.read(text.rva, 16) == img.data[text.raw_offset : text.raw_offset + 16]
    # Past the raw data but inside the virtual size reads as zeros (like .bss).
    data = img.section_named(".data")
    if data is not None and data.virtual_size > data.raw_size:
        assert img.read(data.rva + data.raw_size, 8) == b"\0" * 8


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda b: b[:0x20], "too small"),
        (lambda b: b"ZM" + b[2:], "no MZ signature"),
        (lambda b: b[:0x3C] + b"\xff\xff\xff\x7f" + b[0x40:], "PE header offset"),
    ],
)
def test_malformed_headers_raise_input_error(msvc_dlls, mutate, message):
    from pehotpatch.errors import InputError

    data = msvc_dlls[0].read_bytes()
    with pytest.raises(InputError, match=message):
        parse_pe(mutate(data), "x.dll")


def test_truncated_file_is_refused(msvc_dlls):
    from pehotpatch.errors import InputError

    data = msvc_dlls[0].read_bytes()
    for cut in (0x100, 0x300, len(data) // 2):
        with pytest.raises(InputError, match="truncated"):
            parse_pe(data[:cut], "cut.dll")


def test_sample_images_agree_with_pefile():
    from conftest import SAMPLES

    dlls = sorted(SAMPLES.glob("*/*/*.dll"))
    assert len(dlls) >= 50
    for path in dlls:
        img = assert_agrees_with_pefile(path)
        assert img.load_config is not None and img.load_config.covers_hotpatch_field


def test_cfg_function_table_matches_lief(msvc_dlls):
    import lief

    for path in msvc_dlls[:4]:
        img = load_pe(path)
        lc = lief.PE.parse(str(path)).load_configuration
        assert img.load_config.guard_flags == int(lc.guard_flags)
        assert list(img.load_config.cfg_functions) == [f.rva for f in lc.guard_cf_functions]
        assert img.load_config.cfg_functions


def _with_coff_symbols(data: bytes, bad_name_offset: bool = False) -> bytes:
    """``data`` with a COFF symbol table appended (as MinGW-style linkers leave one):
    a .file symbol with one aux record, a short-named function, a long-named static and
    an absolute symbol, written out here field by field (PE/COFF specification 5.4)."""
    import struct

    d = bytearray(data)
    lfanew = struct.unpack_from("<I", d, 0x3C)[0]
    strtab = bytearray(4)
    strtab += b"a_rather_long_static_name\0"
    long_name = b"\0\0\0\0" + struct.pack("<I", 0x7FFF if bad_name_offset else 4)
    table = b"".join((
        b".file\0\0\0" + struct.pack("<IhHBB", 0, -2, 0, 103, 1),
        b"ring.c".ljust(18, b"\0"),  # the aux record: the file name
        b"tick\0\0\0\0" + struct.pack("<IhHBB", 0x10, 1, 0x20, 2, 0),
        long_name + struct.pack("<IhHBB", 4, 2, 0, 3, 0),
        b"absval\0\0" + struct.pack("<IhHBB", 0x1234, -1, 0, 2, 0),
    ))
    struct.pack_into("<I", strtab, 0, len(strtab))
    struct.pack_into("<II", d, lfanew + 12, len(d), len(table) // 18)  # PointerToSymbolTable, count
    return bytes(d + table + strtab)


def test_coff_symbol_table_of_an_image_agrees_with_lief(tmp_path):
    import lief
    from conftest import SAMPLES

    path = tmp_path / "symbols.dll"
    path.write_bytes(_with_coff_symbols((SAMPLES / "x64/fix_globals/base.dll").read_bytes()))
    img = load_pe(path)
    binary = lief.PE.parse(str(path))  # kept alive: its symbols point into it
    theirs = list(binary.symbols)
    assert [(s.name, s.value, s.section_number, s.storage_class) for s in img.coff_symbols] == [
        (s.name, s.value, s.section_idx, int(s.storage_class)) for s in theirs
    ]
    assert [s.index for s in img.coff_symbols] == [0, 2, 3, 4]  # the aux record is skipped
    sections = pefile.PE(str(path), fast_load=True).sections
    assert [s.rva for s in img.coff_symbols] == [
        None, sections[0].VirtualAddress + 0x10, sections[1].VirtualAddress + 4, None
    ]
    assert [s.is_function for s in img.coff_symbols] == [False, True, False, False]
    assert [s.is_external for s in img.coff_symbols] == [False, True, False, True]


def test_coff_symbol_name_outside_the_string_table_reads_as_empty_in_an_image():
    """The loader ignores an image's symbol table, so a bad name does not refuse the image
    (an object file with the same fault is refused: see test_coff_objects)."""
    from conftest import SAMPLES

    data = _with_coff_symbols((SAMPLES / "x64/fix_globals/base.dll").read_bytes(), bad_name_offset=True)
    assert [s.name for s in parse_pe(data, "bad.dll").coff_symbols] == [".file", "tick", "", "absval"]
