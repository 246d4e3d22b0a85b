"""Symbol record decoding on hand-made buffers: nesting, record kinds, errors."""

from __future__ import annotations

import struct

import pytest

from pehotpatch.errors import FormatError
from pehotpatch.image.codeview import symbols as S
from pehotpatch.image.codeview.subsections import iter_subsections
from pehotpatch.image.codeview.symbols import iter_records, scan_symbols


def rec(kind: int, body: bytes, pad: bool = True) -> bytes:
    if pad:
        body += b"\0" * ((-len(body) - 4) % 4)
    return struct.pack("<HH", len(body) + 2, kind) + body


def z(s: str) -> bytes:
    return s.encode() + b"\0"


def proc(
    name: str,
    *,
    kind: int = S.S_GPROC32,
    seg: int = 1,
    off: int = 0,
    size: int = 16,
    ti: int = 0x1000,
) -> bytes:
    return rec(
        kind, struct.pack("<IIIIIIIIHB", 0, 0, 0, size, 1, size - 1, ti, off, seg, 0) + z(name)
    )


def data(
    name: str, *, kind: int = S.S_LDATA32, ti: int = 0x74, seg: int = 3, off: int = 8
) -> bytes:
    return rec(kind, struct.pack("<IIH", ti, off, seg) + z(name))


def inline(inlinee: int) -> bytes:
    return rec(S.S_INLINESITE, struct.pack("<III", 0, 0, inlinee) + b"\x03\x21")


END = rec(S.S_END, b"")
INLINE_END = rec(S.S_INLINESITE_END, b"")
PROC_ID_END = rec(S.S_PROC_ID_END, b"")


def scan(buf: bytes, **kw):
    return scan_symbols(buf, 0, len(buf), "t.obj", **kw)


def test_procedures_data_and_nesting():
    buf = (
        rec(S.S_OBJNAME, struct.pack("<I", 0) + z("C:/x.obj"))
        + rec(
            S.S_COMPILE3,
            struct.pack("<IH8H", 0x4000 | 1, 0xD0, 22, 1, 8, 0, 22018, 0, 0, 0) + z("clang"),
        )
        + data("file_static")
        + proc("outer", off=0x10, size=0x20)
        + rec(0x1012, b"\0" * 28)  # S_FRAMEPROC
        + rec(S.S_BLOCK32, struct.pack("<IIIIH", 0, 0, 4, 0x14, 1) + z(""))
        + data("fn_static", off=16)
        + inline(0x1005)
        + inline(0x1006)
        + INLINE_END
        + INLINE_END
        + END  # block
        + rec(0x7777, b"unknown record kind, skipped")
        + END  # outer
        + proc("by_id", kind=S.S_LPROC32_ID, ti=0x1003)
        + PROC_ID_END
        + rec(S.S_HOTPATCHFUNC, struct.pack("<I", 0x1003) + z("by_id"))
    )
    out = scan(buf)
    assert out.objname.name == "C:/x.obj"
    assert out.compile.hotpatch and out.compile.language == 1 and out.compile.machine == 0xD0
    assert out.compile.frontend_version == (22, 1, 8, 0)
    assert out.compile.version == "clang"
    assert [
        (p.name, p.segment, p.offset, p.length, p.is_global, p.is_id) for p in out.procedures
    ] == [
        ("outer", 1, 0x10, 0x20, True, False),
        ("by_id", 1, 0, 16, False, True),
    ]
    assert [(d.name, d.procedure, d.is_global) for d in out.data] == [
        ("file_static", None, False),
        ("fn_static", "outer", False),
    ]
    assert [(i.procedure, i.inlinee, i.parent_inlinee) for i in out.inline_sites] == [
        ("outer", 0x1005, None),
        ("outer", 0x1006, 0x1005),
    ]
    assert [(h.name, h.function_id) for h in out.hotpatch_functions] == [("by_id", 0x1003)]
    assert out.record_count == 17
    assert [k for _o, k, _e in iter_records(buf, 0, len(buf))][:3] == [
        S.S_OBJNAME,
        S.S_COMPILE3,
        S.S_LDATA32,
    ]


def test_publics_thunks_and_compile2():
    buf = (
        rec(S.S_PUB32, struct.pack("<IIH", S.PUB_FUNCTION, 0x20, 1) + z("f"))
        + rec(S.S_PUB32, struct.pack("<IIH", 0, 4, 2) + z("g"))
        + rec(S.S_PUB32, struct.pack("<IIH", 0, 4, 9) + z("nosection"))
        + rec(S.S_THUNK32, struct.pack("<IIIIHHB", 0, 0, 0, 0x40, 1, 5, 0) + z("thunk"))
        + END
        + rec(S.S_COMPILE2, struct.pack("<IH6H", 0x4000, 0x03, 19, 0, 1, 19, 0, 1) + z("msvc"))
    )
    out = scan(buf, section_vas=[0x1000, 0x2000])
    assert [(p.name, p.rva, p.is_function) for p in out.publics] == [
        ("f", 0x1020, True),
        ("g", 0x2004, False),
        ("nosection", None, False),
    ]
    assert [(t.name, t.offset, t.length) for t in out.thunks] == [("thunk", 0x40, 5)]
    assert out.compile.kind == S.S_COMPILE2 and out.compile.hotpatch
    assert out.compile.backend_version == (19, 0, 1, 0)


def test_flat_scan_ignores_scopes():
    buf = proc("a") + data("g", kind=S.S_GDATA32)  # no S_END: fine in the flat symbol record stream
    out = scan(buf, nested=False)
    assert [p.name for p in out.procedures] == ["a"]
    assert out.data[0].is_global and out.data[0].procedure is None


def test_names_that_are_not_utf8_are_replaced():
    out = scan(
        data("caf\xe9".encode("latin-1").decode("latin-1"))
        + rec(S.S_LDATA32, struct.pack("<IIH", 0x74, 0, 3) + b"\xff\xfe\0")
    )
    assert out.data[1].name == "\ufffd\ufffd"


@pytest.mark.parametrize(
    "buf, message",
    [
        (END, "unbalanced S_END"),
        (INLINE_END, "unbalanced S_INLINESITE_END"),
        (proc("x"), "not closed"),
        (proc("x") + inline(1) + END, "unbalanced S_END"),
        (struct.pack("<HH", 1, 0x1110), "bad length"),
        (struct.pack("<HH", 100, 0x1110), "bad length"),
        (b"\x04\x00", "truncated"),
        (rec(S.S_GPROC32, b"\0" * 20), "too short"),
        (rec(S.S_GPROC32, b"\1" * 40), "NUL"),
        (rec(S.S_LDATA32, b"\0" * 4), "too short"),
        (rec(S.S_PUB32, b"\0" * 10 + b"abc", pad=False), "NUL"),
        (rec(S.S_HOTPATCHFUNC, b"\0\0", pad=False), "too short"),
        (rec(S.S_COMPILE3, b"\0" * 8), "too short"),
        (rec(S.S_INLINESITE, b"\0" * 8), "too short"),
    ],
)
def test_malformed_symbols(buf, message):
    with pytest.raises(FormatError, match=message):
        scan(buf)


def test_range_checks():
    with pytest.raises(FormatError):
        scan_symbols(b"\0" * 8, 4, 20)
    with pytest.raises(FormatError):
        list(iter_records(b"\0" * 8, -1, 4))


def test_subsections():
    body = (
        struct.pack("<II", 0xF1, 5)
        + b"abcde"
        + b"\0\0\0"
        + struct.pack("<II", 0x800000F3, 2)
        + b"xy\0\0"
    )
    assert list(iter_subsections(body, 0, len(body))) == [(0xF1, 8, 13), (0x800000F3, 24, 26)]
    with pytest.raises(FormatError, match="runs past"):
        list(iter_subsections(struct.pack("<II", 0xF1, 99), 0, 8))
    with pytest.raises(FormatError, match="truncated"):
        list(iter_subsections(b"\xf1\0\0\0", 0, 4))
