"""TypeTable on hand-made type streams: names, sizes, layouts, signatures, cycles."""

from __future__ import annotations

import struct

import pytest

from pehotpatch.errors import FormatError
from pehotpatch.image.codeview import leaves as T
from pehotpatch.image.codeview import names as type_names
from pehotpatch.image.codeview.stream import TypeRecords
from pehotpatch.image.codeview.types import TypeTable


class Stream:
    """Builds a buffer of type records; ``add`` returns the new record's type index."""

    def __init__(self, first: int = 0x1000) -> None:
        self.buf = bytearray()
        self.next = first
        self.first = first

    def add(self, kind: int, body: bytes) -> int:
        rec = struct.pack("<H", kind) + body
        rec += bytes((0xF0 + (-len(rec) - 2) % 4 - k) for k in range((-len(rec) - 2) % 4))  # LF_PAD
        self.buf += struct.pack("<H", len(rec)) + rec
        ti = self.next
        self.next += 1
        return ti

    def records(self) -> TypeRecords:
        return TypeRecords(bytes(self.buf), 0, len(self.buf), self.first, "t.pdb")

    def table(self, ids: Stream | None = None) -> TypeTable:
        return TypeTable(self.records(), ids.records() if ids else None, "t.pdb")


def z(s: str) -> bytes:
    return s.encode() + b"\0"


def num(v: int) -> bytes:
    if 0 <= v < 0x8000:
        return struct.pack("<H", v)
    if -128 <= v < 128:
        return struct.pack("<Hb", 0x8000, v)
    if -(1 << 31) <= v < (1 << 31):
        return struct.pack("<Hi", 0x8003, v)
    return struct.pack("<HQ", 0x800A, v)


def member(ti: int, off: int, name: str, attrs: int = 3) -> bytes:
    m = struct.pack("<HHI", T.LF_MEMBER, attrs, ti) + num(off) + z(name)
    return m + bytes(0xF0 + k for k in range((-len(m)) % 4, 0, -1))


def pointer(s: Stream, ref: int, *, size: int = 8, const: bool = False, mode: int = 0) -> int:
    attrs = 0x0C | (mode << 5) | (size << 13) | (T.PTR_CONST if const else 0)
    return s.add(T.LF_POINTER, struct.pack("<II", ref, attrs))


def struct_rec(
    s: Stream,
    name: str,
    flist: int,
    size: int,
    *,
    fwd: bool = False,
    unique: str | None = None,
    kind: int = T.LF_STRUCTURE,
) -> int:
    props = (T.PROP_FORWARD_REF if fwd else 0) | (T.PROP_HAS_UNIQUE_NAME if unique else 0)
    body = struct.pack("<HHIII", 0, props, flist, 0, 0) + num(size) + z(name)
    if unique:
        body += z(unique)
    return s.add(kind, body)


def arglist(s: Stream, *tis: int) -> int:
    return s.add(T.LF_ARGLIST, struct.pack(f"<I{len(tis)}I", len(tis), *tis))


def proc(s: Stream, ret: int, args: int, cc: int = 0, nargs: int = 0) -> int:
    return s.add(T.LF_PROCEDURE, struct.pack("<IBBHI", ret, cc, 0, nargs, args))


INT, UINT, CHAR, VOID, ULL = 0x74, 0x75, 0x70, 0x03, 0x23


@pytest.mark.parametrize(
    "ti, name, size",
    [
        (0x0074, "int", 4),
        (0x0075, "unsigned int", 4),
        (0x0070, "char", 1),
        (0x0020, "unsigned char", 1),
        (0x0023, "unsigned long long", 8),
        (0x0013, "long long", 8),
        (0x0012, "long", 4),
        (0x0041, "double", 8),
        (0x0030, "bool", 1),
        (0x0603, "void *", 8),  # 64-bit pointer mode
        (0x0403, "void *", 4),  # 32-bit pointer mode
        (0x0670, "char *", 8),
        (0x0003, "void", None),
        (0x0000, "<no type>", None),
    ],
)
def test_simple_types(ti, name, size):
    t = Stream().table()
    assert t.type_name(ti) == name
    assert t.type_size(ti) == size
    assert t.contains_pointers(ti) == bool(ti & 0xF00)
    assert t.layout(ti).kind == ("pointer" if ti & 0xF00 else "base")


def test_names_of_composed_types():
    s = Stream()
    cchar = s.add(T.LF_MODIFIER, struct.pack("<IH", CHAR, T.MOD_CONST))
    pcchar = pointer(s, cchar)
    cpcchar = pointer(s, cchar, const=True)
    arr = s.add(T.LF_ARRAY, struct.pack("<II", cpcchar, ULL) + num(16) + z(""))
    arr2 = s.add(T.LF_ARRAY, struct.pack("<II", INT, ULL) + num(12) + z(""))
    arr23 = s.add(T.LF_ARRAY, struct.pack("<II", arr2, ULL) + num(24) + z(""))
    parr = pointer(s, arr2)
    args = arglist(s, INT, pcchar)
    fn = proc(s, INT, args, nargs=2)
    pfn = pointer(s, fn)
    vol = s.add(T.LF_MODIFIER, struct.pack("<IH", 0x12, T.MOD_VOLATILE))
    cptr = s.add(T.LF_MODIFIER, struct.pack("<IH", pcchar, T.MOD_CONST))
    lref = pointer(s, INT, mode=T.PTR_MODE_LVALUE_REF)
    rref = pointer(s, INT, mode=T.PTR_MODE_RVALUE_REF)
    t = s.table()
    assert t.type_name(pcchar) == "const char *"
    assert t.type_name(cpcchar) == "const char *const"
    assert t.type_name(arr) == "const char *const[2]"
    assert t.type_name(arr23) == "int[2][3]"
    assert t.type_name(parr) == "int (*)[3]"
    assert t.type_name(fn) == "int (int, const char *)"
    assert t.type_name(pfn) == "int (*)(int, const char *)"
    assert t.type_name(vol) == "volatile long"
    assert t.type_name(cptr) == "const char *const"
    assert t.type_name(lref) == "int &"
    assert t.type_name(rref) == "int &&"
    assert t.type_size(arr) == 16
    assert t.type_size(fn) is None
    assert t.is_const(arr) and t.is_const(cpcchar) and t.is_const(cptr)
    assert not t.is_const(pcchar) and not t.is_const(arr23)
    assert t.contains_pointers(arr) and not t.contains_pointers(arr23)
    assert t.layout(arr).kind == "array"
    assert t.layout(lref).kind == "reference"


def test_signatures_calling_conventions_and_varargs():
    s = Stream()
    a2 = arglist(s, INT, INT)
    std = proc(s, INT, a2, cc=0x07, nargs=2)
    fast = proc(s, INT, a2, cc=0x04, nargs=2)
    vec = proc(s, INT, a2, cc=0x18, nargs=2)
    cdecl = proc(s, INT, a2, cc=0x00, nargs=2)
    var = proc(s, INT, arglist(s, pointer(s, CHAR), 0), nargs=2)
    none = proc(s, VOID, arglist(s))
    inner = proc(s, VOID, arglist(s, INT), nargs=1)
    ret_fp = proc(s, pointer(s, inner), arglist(s))
    std_ptr = pointer(s, std)
    t = s.table()
    assert t.signature(std, "f") == "int __stdcall f(int, int)"
    assert t.signature(fast, "f") == "int __fastcall f(int, int)"
    assert t.signature(vec, "f") == "int __vectorcall f(int, int)"
    assert t.signature(cdecl, "f") == "int f(int, int)"
    assert t.signature(var, "printf_like") == "int printf_like(char *, ...)"
    assert t.signature(none, "g") == "void g(void)"
    assert t.signature(ret_fp, "get") == "void (*get(void))(int)"
    assert t.type_name(std_ptr) == "int (__stdcall *)(int, int)"
    # the template cache gives every name its own string
    assert t.signature(std, "other") == "int __stdcall other(int, int)"
    with pytest.raises(FormatError, match="not a function type"):
        t.signature(a2, "x")


def test_member_function_signature_const_and_thiscall():
    s = Stream()
    cls_fwd = struct_rec(s, "C", 0, 0, fwd=True)
    const_cls = s.add(T.LF_MODIFIER, struct.pack("<IH", cls_fwd, T.MOD_CONST))
    this_const = pointer(s, const_cls)
    this_plain = pointer(s, cls_fwd)
    args = arglist(s, INT)
    m_const = s.add(
        T.LF_MFUNCTION, struct.pack("<IIIBBHIi", INT, cls_fwd, this_const, 0x0B, 0, 1, args, 0)
    )
    m_plain = s.add(
        T.LF_MFUNCTION, struct.pack("<IIIBBHIi", VOID, cls_fwd, this_plain, 0x0B, 0, 1, args, 0)
    )
    m_std = s.add(
        T.LF_MFUNCTION, struct.pack("<IIIBBHIi", VOID, cls_fwd, this_plain, 0x07, 0, 1, args, 0)
    )
    t = s.table()
    assert t.signature(m_const, "C::get") == "int C::get(int) const"
    assert t.signature(m_plain, "C::set") == "void C::set(int)"
    assert t.signature(m_std, "C::cb") == "void __stdcall C::cb(int)"


def test_struct_layout_bitfields_nested_array_and_forward_refs():
    s = Stream()
    inner_fwd = struct_rec(s, "inner", 0, 0, fwd=True)
    bf1 = s.add(T.LF_BITFIELD, struct.pack("<IBB", UINT, 3, 0))
    bf2 = s.add(T.LF_BITFIELD, struct.pack("<IBB", UINT, 5, 3))
    arr = s.add(T.LF_ARRAY, struct.pack("<II", INT, ULL) + num(64) + z(""))
    outer_fwd = struct_rec(s, "outer", 0, 0, fwd=True)
    self_ptr = pointer(s, outer_fwd)
    fl = s.add(
        T.LF_FIELDLIST,
        member(INT, 0, "a")
        + member(arr, 4, "buf")
        + member(inner_fwd, 68, "in")
        + member(bf1, 72, "f1")
        + member(bf2, 72, "f2")
        + member(self_ptr, 80, "next"),
    )
    outer = struct_rec(s, "outer", fl, 88)
    ifl = s.add(T.LF_FIELDLIST, member(0x11, 0, "x") + member(CHAR, 2, "y"))
    inner = struct_rec(s, "inner", ifl, 4)
    t = s.table()
    assert t.resolve(inner_fwd) == inner
    assert t.resolve(outer_fwd) == outer
    assert t.udt_by_name("outer") == outer
    assert t.udt_by_name("struct inner") == inner
    assert t.udt_by_name("missing") is None
    lay = t.layout(outer_fwd)  # a forward reference gives the definition's layout
    assert (lay.name, lay.size, lay.kind, lay.type_index) == ("struct outer", 88, "struct", outer)
    got = [(f.name, f.offset, f.type_name, f.size, f.bit_offset, f.bit_size) for f in lay.fields]
    assert got == [
        ("a", 0, "int", 4, None, None),
        ("buf", 4, "int[16]", 64, None, None),
        ("in", 68, "struct inner", 4, None, None),
        ("f1", 72, "unsigned int", 4, 0, 3),
        ("f2", 72, "unsigned int", 4, 3, 5),
        ("next", 80, "struct outer *", 8, None, None),
    ]
    # a self-referential struct (through a pointer) is fine
    assert t.contains_pointers(outer)
    assert not t.contains_pointers(inner)
    assert t.type_size(inner_fwd) == 4


def test_forward_ref_resolved_by_unique_name_and_missing_definition():
    s = Stream()
    fwd_a = struct_rec(s, "S", 0, 0, fwd=True, unique=".?AUS@a@@")
    fwd_b = struct_rec(s, "S", 0, 0, fwd=True, unique=".?AUS@b@@")
    fwd_missing = struct_rec(s, "Nowhere", 0, 0, fwd=True)
    fl1 = s.add(T.LF_FIELDLIST, member(INT, 0, "one"))
    def_a = struct_rec(s, "S", fl1, 4, unique=".?AUS@a@@")
    fl2 = s.add(T.LF_FIELDLIST, member(ULL, 0, "two"))
    def_b = struct_rec(s, "S", fl2, 8, unique=".?AUS@b@@")
    t = s.table()
    assert t.resolve(fwd_a) == def_a
    assert t.resolve(fwd_b) == def_b
    assert t.type_size(fwd_b) == 8
    missing = t.layout(fwd_missing)
    assert missing.is_forward_ref and missing.size is None and missing.fields == []
    assert t.type_size(fwd_missing) is None


def test_union_enum_class_and_field_list_continuation():
    s = Stream()
    e_fl = s.add(
        T.LF_FIELDLIST,
        struct.pack("<HH", T.LF_ENUMERATE, 3)
        + num(0)
        + z("A")
        + b"\xf1"
        + struct.pack("<HH", T.LF_ENUMERATE, 3)
        + num(-5)
        + z("NEG")
        + b"\xf3\xf2\xf1"
        + struct.pack("<HH", T.LF_ENUMERATE, 3)
        + num(0x123456789)
        + z("BIG"),
    )
    enum = s.add(T.LF_ENUM, struct.pack("<HHII", 3, 0, UINT, e_fl) + z("E"))
    u_fl = s.add(T.LF_FIELDLIST, member(INT, 0, "i") + member(pointer(s, VOID), 0, "p"))
    union = s.add(T.LF_UNION, struct.pack("<HHI", 2, 0, u_fl) + num(8) + z("U"))
    tail = s.add(T.LF_FIELDLIST, member(INT, 8, "late"))
    head = s.add(T.LF_FIELDLIST, member(INT, 0, "early") + struct.pack("<HHI", T.LF_INDEX, 0, tail))
    base_fl = s.add(T.LF_FIELDLIST, struct.pack("<HHI", T.LF_VFUNCTAB, 0, VOID))
    base = struct_rec(s, "B", base_fl, 8, kind=T.LF_CLASS)
    d_fl = s.add(
        T.LF_FIELDLIST,
        struct.pack("<HHI", T.LF_BCLASS, 3, base)
        + num(0)
        + member(INT, 8, "x")
        + struct.pack("<HHI", T.LF_STMEMBER, 3, INT)
        + z("s")
        + b"\xf2\xf1"
        + struct.pack("<HHI", T.LF_ONEMETHOD, 3, 0x1000)
        + z("m")
        + b"\xf1",
    )
    derived = struct_rec(s, "D", d_fl, 16, kind=T.LF_CLASS)
    big = struct_rec(s, "Big", head, 1 << 33)
    t = s.table()
    el = t.layout(enum)
    assert (el.kind, el.size, el.name) == ("enum", 4, "enum E")
    assert el.enumerators == [("A", 0), ("NEG", -5), ("BIG", 0x123456789)]
    ul = t.layout(union)
    assert (ul.kind, ul.size, [f.name for f in ul.fields]) == ("union", 8, ["i", "p"])
    assert t.contains_pointers(union)
    assert [f.name for f in t.layout(big).fields] == ["early", "late"]
    assert t.type_size(big) == 1 << 33
    dl = t.layout(derived)
    assert dl.kind == "class"
    assert [(b.name, b.offset) for b in dl.bases] == [("class B", 0)]
    assert [f.name for f in dl.fields] == ["x"]  # static members and methods are not fields
    assert t.layout(base).has_vfptr
    assert t.contains_pointers(derived)  # the base's vfptr


def test_ids_function_names_and_inline_names():
    types = Stream()
    fn = proc(types, INT, arglist(types, INT), nargs=1)
    cls = struct_rec(types, "ns::C", 0, 0, fwd=True)
    ids = Stream()
    scope = ids.add(T.LF_STRING_ID, struct.pack("<I", 0) + z("ns"))
    fid = ids.add(T.LF_FUNC_ID, struct.pack("<II", scope, fn) + z("f"))
    plain = ids.add(T.LF_FUNC_ID, struct.pack("<II", 0, fn) + z("g"))
    mfid = ids.add(T.LF_MFUNC_ID, struct.pack("<II", cls, fn) + z("method"))
    t = types.table(ids)
    assert t.id_name(fid) == "ns::f"
    assert t.id_name(plain) == "g"
    assert t.id_name(mfid) == "ns::C::method"
    assert t.id_name(0x9999) is None
    assert t.function_type_of(fid, True) == fn
    assert t.function_type_of(fn, False) == fn
    assert t.procedure_signature(fid, True, "f") == (fn, "int f(int)")
    assert t.procedure_signature(fn, False, "h") == (fn, "int h(int)")
    assert t.procedure_signature(0x9999, True, "x") == (0, None)


def test_unknown_leaf_and_out_of_range_index():
    s = Stream()
    odd = s.add(0x1519 + 0x100, b"\0\0\0\0")  # no such leaf
    t = s.table()
    assert t.type_name(odd).startswith("<leaf ")
    assert t.type_name(0x5000) == "<type 0x5000>"
    assert t.type_size(0x5000) is None
    assert t.record(0x5000) is None
    assert t.layout(0x5000).kind == "unknown"


# --- malformed streams ---------------------------------------------------------------------
def test_pointer_cycle_is_format_error():
    s = Stream()
    s.add(T.LF_POINTER, struct.pack("<II", 0x1000, 0x0C | (8 << 13)))  # points to itself
    t = s.table()
    with pytest.raises(FormatError, match="cycle"):
        t.type_name(0x1000)
    # size and pointer facts of a pointer do not need its referent
    assert t.type_size(0x1000) == 8
    assert t.contains_pointers(0x1000)


def test_modifier_cycle_is_format_error():
    s = Stream()
    s.add(T.LF_MODIFIER, struct.pack("<IH", 0x1001, T.MOD_VOLATILE))
    s.add(T.LF_MODIFIER, struct.pack("<IH", 0x1000, T.MOD_VOLATILE))
    t = s.table()
    for f in (t.type_name, t.type_size, t.is_const, t.contains_pointers):
        with pytest.raises(FormatError):
            f(0x1000)


def test_struct_containing_itself_by_value_is_format_error():
    s = Stream()
    fwd = struct_rec(s, "Loop", 0, 0, fwd=True)
    fl = s.add(T.LF_FIELDLIST, member(fwd, 0, "me"))
    struct_rec(s, "Loop", fl, 4)
    t = s.table()
    with pytest.raises(FormatError, match="contains itself"):
        t.contains_pointers(fwd)
    # naming and layout do not recurse into members' members
    assert [f.type_name for f in t.layout(fwd).fields] == ["struct Loop"]


def test_field_list_continuation_cycle_is_format_error():
    s = Stream()
    s.add(T.LF_FIELDLIST, member(INT, 0, "a") + struct.pack("<HHI", T.LF_INDEX, 0, 0x1000))
    struct_rec(s, "S", 0x1000, 4)
    with pytest.raises(FormatError, match="continues into itself"):
        s.table().layout(0x1001)


def test_array_chain_too_deep_is_format_error():
    s = Stream()
    prev = INT
    for _ in range(T.MAX_DEPTH + 5):
        prev = s.add(T.LF_ARRAY, struct.pack("<II", prev, ULL) + num(4) + z(""))
    with pytest.raises(FormatError, match="deeper"):
        s.table().type_name(prev)


@pytest.mark.parametrize(
    "kind, body, message",
    [
        (T.LF_ARGLIST, struct.pack("<II", 1000, INT), "do not fit"),
        (T.LF_POINTER, b"\0\0", "too short"),
        (
            T.LF_STRUCTURE,
            struct.pack("<HHIII", 0, 0, 0, 0, 0) + struct.pack("<H", 0x8003) + b"\1",
            "truncated",
        ),
        (T.LF_STRUCTURE, struct.pack("<HHIII", 0, 0, 0, 0, 0) + num(4) + b"noterm", "NUL"),
        (
            T.LF_STRUCTURE,
            struct.pack("<HHIII", 0, 0, 0, 0, 0) + struct.pack("<H", 0x8FFF) + z("x"),
            "unknown numeric",
        ),
        (T.LF_FIELDLIST, struct.pack("<H", 0x1234) + b"\0" * 6, "unknown field list member"),
        (T.LF_FIELDLIST, struct.pack("<HHI", T.LF_MEMBER, 3, INT), "truncated"),
    ],
)
def test_malformed_records(kind, body, message):
    s = Stream()
    s.add(kind, body)
    with pytest.raises(FormatError, match=message):
        s.table().record(0x1000)


def test_malformed_record_index():
    with pytest.raises(FormatError, match="bad length"):
        len(TypeRecords(struct.pack("<HH", 1, T.LF_POINTER), 0, 4, path="t"))
    with pytest.raises(FormatError, match="runs past"):
        len(TypeRecords(struct.pack("<HH", 40, T.LF_POINTER), 0, 4, path="t"))
    with pytest.raises(FormatError, match="header says"):
        len(TypeRecords(struct.pack("<HHI", 6, T.LF_MODIFIER, 0), 0, 8, path="t", expected_count=3))
    with pytest.raises(FormatError):
        TypeRecords(b"", 0, 10, path="t")


def test_nested_function_types_keep_names_bounded():
    """Each level multiplies the name length by the argument count: names stay bounded."""
    s = Stream()
    fn = proc(s, INT, arglist(s))
    for _ in range(6):
        fp = pointer(s, fn)
        fn = proc(s, INT, arglist(s, *([fp] * 2000)), nargs=2000)
    t = s.table()
    name = t.type_name(fn)
    assert len(name) < 2 * T.MAX_NAME
    assert name.endswith("...)")


def test_composed_names_stop_at_the_table_budget(monkeypatch):
    """Many records naming one deeply nested function type: each name is long, and the
    table stops composing names once their total passes its budget."""
    monkeypatch.setattr(type_names, "NAME_BUDGET", 200_000)  # read where the names are composed
    s = Stream()
    fn = proc(s, INT, arglist(s))
    for _ in range(4):
        fp = pointer(s, fn)
        fn = proc(s, INT, arglist(s, *([fp] * 2000)), nargs=2000)
    deep = pointer(s, fn)
    mods = [s.add(T.LF_MODIFIER, struct.pack("<IH", deep, 1)) for _ in range(100)]
    t = s.table()
    names = [t.type_name(m) for m in mods]
    composed = [n for n in names if not n.startswith("<type ")]
    assert composed and composed[0].startswith("int (*const)(int (*)(")
    assert len(composed) < len(names)  # the rest became placeholders
    assert names[-1] == f"<type {mods[-1]:#x}>"
    assert sum(map(len, names)) < 200_000 + 8 * len(t.types.buf) + 2 * (2 * T.MAX_NAME + 64)
