"""CodeView symbol records, as found in PDB module streams, the PDB symbol record
stream and COFF ``.debug$S`` symbol subsections (0xF1).

Only the records pehp needs are decoded; every other record is skipped by its length.
Decoding is one pass over the buffer (:func:`scan_symbols`), tracking the scope nesting
(procedures, blocks, thunks and inline sites against S_END / S_PROC_ID_END /
S_INLINESITE_END) so that function-scope statics and inline sites know their procedure.

Record layout: ``u16 length`` (bytes after this field), ``u16 kind``, body.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

from pehotpatch.errors import FormatError

from ._binary import cstring, cstring_tail

# --- symbol kinds --------------------------------------------------------------------
S_END = 0x0006
S_SKIP = 0x0007
S_OBJNAME = 0x1101
S_THUNK32 = 0x1102
S_BLOCK32 = 0x1103
S_WITH32 = 0x1104
S_LABEL32 = 0x1105
S_CONSTANT = 0x1107
S_UDT = 0x1108
S_LDATA32 = 0x110C
S_GDATA32 = 0x110D
S_PUB32 = 0x110E
S_LPROC32 = 0x110F
S_GPROC32 = 0x1110
S_LTHREAD32 = 0x1112
S_GTHREAD32 = 0x1113
S_COMPILE2 = 0x1116
S_PROCREF = 0x1125
S_DATAREF = 0x1126
S_LPROCREF = 0x1127
S_GMANPROC = 0x112A
S_LMANPROC = 0x112B
S_SEPCODE = 0x1132
S_COMPILE3 = 0x113C
S_LOCAL = 0x113E
S_INLINESITE = 0x114D
S_INLINESITE_END = 0x114E
S_PROC_ID_END = 0x114F
S_LPROC32_ID = 0x1146
S_GPROC32_ID = 0x1147
S_LPROC32_DPC = 0x1155
S_LPROC32_DPC_ID = 0x1156
S_INLINESITE2 = 0x115D
S_HOTPATCHFUNC = 0x1169

SYMBOL_KIND_NAMES: dict[int, str] = {
    v: k
    for k, v in list(globals().items())
    if k.startswith("S_") and isinstance(v, int) and k != "S_"
}

PROC_KINDS = frozenset(
    {S_GPROC32, S_LPROC32, S_GPROC32_ID, S_LPROC32_ID, S_LPROC32_DPC, S_LPROC32_DPC_ID}
)
GLOBAL_PROC_KINDS = frozenset({S_GPROC32, S_GPROC32_ID})
ID_PROC_KINDS = frozenset({S_GPROC32_ID, S_LPROC32_ID, S_LPROC32_DPC_ID})
DATA_KINDS = frozenset({S_LDATA32, S_GDATA32, S_LTHREAD32, S_GTHREAD32})
# Records that open a scope closed by S_END (or S_PROC_ID_END for the _ID procedures).
_SCOPE_KINDS = PROC_KINDS | {S_THUNK32, S_BLOCK32, S_WITH32, S_SEPCODE, S_GMANPROC, S_LMANPROC}
_INLINE_KINDS = frozenset({S_INLINESITE, S_INLINESITE2})

# S_COMPILE2/S_COMPILE3 flag bits (above the 8-bit language code).
COMPILE_FLAG_EC = 1 << 8
COMPILE_FLAG_NO_DEBUG_INFO = 1 << 9
COMPILE_FLAG_LTCG = 1 << 10
COMPILE_FLAG_NO_DATA_ALIGN = 1 << 11
COMPILE_FLAG_MANAGED = 1 << 12
COMPILE_FLAG_SECURITY_CHECKS = 1 << 13
COMPILE_FLAG_HOTPATCH = 1 << 14
COMPILE_FLAG_CVTCIL = 1 << 15
COMPILE_FLAG_MSIL_MODULE = 1 << 16
COMPILE_FLAG_SDL = 1 << 17
COMPILE_FLAG_PGO = 1 << 18
COMPILE_FLAG_EXP = 1 << 19

# S_PUB32 flags
PUB_CODE = 0x1
PUB_FUNCTION = 0x2
PUB_MANAGED = 0x4
PUB_MSIL = 0x8

# Byte offsets, from the start of a record (its length field), of the fields a COFF
# relocation patches: used to find the section symbol a record refers to in an .obj.
PROC_OFFSET_FIELD = 4 + 28
DATA_OFFSET_FIELD = 4 + 4
THUNK_OFFSET_FIELD = 4 + 12
PUB_OFFSET_FIELD = 4 + 4

_HH = struct.Struct("<HH")
_PROC = struct.Struct("<IIIIIIIIHB")  # parent end next len dbgstart dbgend type off seg flags
_DATA = struct.Struct("<IIH")  # type offset segment
_THUNK = struct.Struct("<IIIIHHB")  # parent end next offset segment length ordinal
_BLOCK = struct.Struct("<IIIIH")  # parent end length offset segment
_INLINE = struct.Struct("<III")  # parent end inlinee
_COMPILE3 = struct.Struct("<IH8H")
_COMPILE2 = struct.Struct("<IH6H")
_PUB = struct.Struct("<IIH")
_II = struct.Struct("<II")


@dataclass(slots=True)
class ProcSym:
    """S_GPROC32 / S_LPROC32 and their _ID and _DPC forms."""

    kind: int
    name: str
    segment: int
    offset: int
    length: int
    type_index: int  # a TPI type for the plain forms, an IPI id (LF_FUNC_ID) for the _ID forms
    debug_start: int
    debug_end: int
    flags: int
    record_offset: int
    parent: int = 0  # offsets of the enclosing scope record and of the matching S_END
    end: int = 0  # (filled by the linker in a PDB; 0 in an object file)

    @property
    def is_global(self) -> bool:
        return self.kind in GLOBAL_PROC_KINDS

    @property
    def is_id(self) -> bool:
        return self.kind in ID_PROC_KINDS


@dataclass(slots=True)
class DataSym:
    """S_GDATA32 / S_LDATA32 / S_GTHREAD32 / S_LTHREAD32."""

    kind: int
    name: str
    type_index: int
    segment: int
    offset: int
    record_offset: int
    procedure: str | None = None  # enclosing procedure for function-scope statics

    @property
    def is_global(self) -> bool:
        return self.kind in (S_GDATA32, S_GTHREAD32)

    @property
    def is_thread_local(self) -> bool:
        return self.kind in (S_LTHREAD32, S_GTHREAD32)


@dataclass(slots=True)
class PubSym:
    """S_PUB32."""

    name: str
    segment: int
    offset: int
    flags: int
    record_offset: int
    rva: int | None = None  # filled when the scan was given the image's section addresses

    @property
    def is_function(self) -> bool:
        return bool(self.flags & PUB_FUNCTION)

    @property
    def is_code(self) -> bool:
        return bool(self.flags & PUB_CODE)


@dataclass(slots=True)
class HotpatchFuncSym:
    """S_HOTPATCHFUNC (0x1169): a function compiled for secure hot-patching."""

    function_id: int  # id index of an LF_FUNC_ID / LF_MFUNC_ID
    name: str
    record_offset: int


@dataclass(frozen=True, slots=True)
class CompileSym:
    """S_COMPILE3 (or the older S_COMPILE2, whose QFE numbers read as 0)."""

    kind: int
    flags: int
    machine: int
    frontend_version: tuple[int, int, int, int]
    backend_version: tuple[int, int, int, int]
    version: str

    @property
    def language(self) -> int:
        return self.flags & 0xFF

    @property
    def hotpatch(self) -> bool:
        """The module was compiled with /hotpatch (clang: -fms-hotpatch)."""
        return bool(self.flags & COMPILE_FLAG_HOTPATCH)

@dataclass(slots=True)
class InlineSiteSym:
    """S_INLINESITE / S_INLINESITE2: ``inlinee`` (an id index) was inlined into ``procedure``.

    ``parent_inlinee`` is the id of the enclosing inline site when inlining is nested
    (then the code physically lives in ``procedure`` but was called from that inlinee).
    """

    procedure: str | None
    inlinee: int
    parent_inlinee: int | None
    record_offset: int
    parent: int = 0  # offsets of the enclosing scope record and of the S_INLINESITE_END
    end: int = 0


@dataclass(slots=True)
class ThunkSym:
    """S_THUNK32."""

    name: str
    segment: int
    offset: int
    length: int
    ordinal: int
    record_offset: int


@dataclass(frozen=True, slots=True)
class ObjNameSym:
    signature: int
    name: str


@dataclass(slots=True)
class SymbolScan:
    """What one pass over a symbol buffer found."""

    procedures: list[ProcSym] = field(default_factory=list)
    data: list[DataSym] = field(default_factory=list)
    publics: list[PubSym] = field(default_factory=list)
    hotpatch_functions: list[HotpatchFuncSym] = field(default_factory=list)
    inline_sites: list[InlineSiteSym] = field(default_factory=list)
    thunks: list[ThunkSym] = field(default_factory=list)
    compile: CompileSym | None = None
    objname: ObjNameSym | None = None
    record_count: int = 0


def iter_records(
    buf: bytes, start: int, end: int, path: str | None = None
) -> Iterator[tuple[int, int, int]]:
    """Yield ``(record_offset, kind, record_end)`` for each record in ``buf[start:end]``."""
    if start < 0 or end > len(buf) or start > end:
        raise FormatError(f"symbol records: range {start:#x}..{end:#x} outside the buffer", path)
    pos = start
    unpack = _HH.unpack_from
    while pos < end:
        if pos + 4 > end:
            raise FormatError(f"symbol record header truncated at offset {pos:#x}", path)
        reclen, kind = unpack(buf, pos)
        rec_end = pos + 2 + reclen
        if reclen < 2 or rec_end > end:
            raise FormatError(f"symbol record at offset {pos:#x} has bad length {reclen}", path)
        yield pos, kind, rec_end
        pos = rec_end


def _short(what: int, pos: int, path: str | None) -> FormatError:
    return FormatError(
        f"{SYMBOL_KIND_NAMES.get(what, hex(what))} record at offset {pos:#x} is too short", path
    )


def _unterminated(what: int, pos: int, path: str | None) -> FormatError:
    return FormatError(
        f"{SYMBOL_KIND_NAMES.get(what, hex(what))} record at offset {pos:#x}: "
        "name is not NUL-terminated",
        path,
    )


# dispatch codes, tested in order of how common the records are
_C_END = 1
_C_PROC = 2
_C_DATA = 3
_C_PUB = 4
_C_INLINE = 5
_C_INLINE_END = 6
_C_SCOPE = 7
_C_THUNK = 8
_C_HOTPATCH = 9
_C_COMPILE3 = 10
_C_COMPILE2 = 11
_C_OBJNAME = 12

_CODES: dict[int, int] = {S_END: _C_END, S_PROC_ID_END: _C_END}
_CODES.update(dict.fromkeys(PROC_KINDS, _C_PROC))
_CODES.update(dict.fromkeys(DATA_KINDS, _C_DATA))
_CODES.update(dict.fromkeys(_INLINE_KINDS, _C_INLINE))
_CODES.update(dict.fromkeys(_SCOPE_KINDS - PROC_KINDS - {S_THUNK32}, _C_SCOPE))
_CODES.update(
    {
        S_PUB32: _C_PUB,
        S_INLINESITE_END: _C_INLINE_END,
        S_THUNK32: _C_THUNK,
        S_HOTPATCHFUNC: _C_HOTPATCH,
        S_COMPILE3: _C_COMPILE3,
        S_COMPILE2: _C_COMPILE2,
        S_OBJNAME: _C_OBJNAME,
    }
)


def scan_symbols(
    buf: bytes,
    start: int,
    end: int,
    path: str | None = None,
    *,
    nested: bool = True,
    section_vas: list[int] | None = None,
) -> SymbolScan:
    """Decode the symbol records in ``buf[start:end]`` in one pass.

    ``nested`` is True for module streams and ``.debug$S`` (scopes must balance); the
    PDB symbol record stream (globals/publics) is flat and is scanned with ``nested=False``.
    ``section_vas`` (virtual address of each 1-based section) fills ``PubSym.rva``.
    """
    if start < 0 or end > len(buf) or start > end:
        raise FormatError(f"symbol records: range {start:#x}..{end:#x} outside the buffer", path)
    out = SymbolScan()
    procedures = out.procedures
    data = out.data
    publics = out.publics
    # scope stack entries: (kind, procedure name in effect, inlinee id or None)
    stack: list[tuple[int, str | None, int | None]] = []
    push = stack.append
    cur_proc: str | None = None
    cur_inlinee: int | None = None
    unpack_hh = _HH.unpack_from
    unpack_proc = _PROC.unpack_from
    unpack_data = _DATA.unpack_from
    unpack_pub = _PUB.unpack_from
    find = buf.find
    codes = _CODES.get
    vas = section_vas or []
    nsec = len(vas)
    count = 0
    pos = start
    while pos < end:
        if pos + 4 > end:
            raise FormatError(f"symbol record header truncated at offset {pos:#x}", path)
        reclen, kind = unpack_hh(buf, pos)
        rec_end = pos + 2 + reclen
        if reclen < 2 or rec_end > end:
            raise FormatError(f"symbol record at offset {pos:#x} has bad length {reclen}", path)
        count += 1
        code = codes(kind)
        if code is None:
            pos = rec_end
            continue
        body = pos + 4
        if code == _C_END:
            if nested:
                if not stack or stack[-1][0] in _INLINE_KINDS:
                    raise FormatError(f"unbalanced S_END at offset {pos:#x}", path)
                _k, cur_proc, cur_inlinee = stack.pop()
        elif code == _C_PROC:
            if body + 35 > rec_end:
                raise _short(kind, pos, path)
            parent, scope_end, _n, length, dbg_s, dbg_e, ti, off, seg, flags = unpack_proc(
                buf, body
            )
            nul = find(b"\0", body + 35, rec_end)
            if nul < 0:
                raise _unterminated(kind, pos, path)
            name = buf[body + 35 : nul].decode("utf-8", "replace")
            procedures.append(
                ProcSym(
                    kind, name, seg, off, length, ti, dbg_s, dbg_e, flags, pos, parent, scope_end
                )
            )
            if nested:
                push((kind, cur_proc, cur_inlinee))
                cur_proc = name
                cur_inlinee = None
        elif code == _C_DATA:
            if body + 10 > rec_end:
                raise _short(kind, pos, path)
            ti, off, seg = unpack_data(buf, body)
            nul = find(b"\0", body + 10, rec_end)
            if nul < 0:
                raise _unterminated(kind, pos, path)
            name = buf[body + 10 : nul].decode("utf-8", "replace")
            data.append(DataSym(kind, name, ti, seg, off, pos, cur_proc))
        elif code == _C_PUB:
            if body + 10 > rec_end:
                raise _short(kind, pos, path)
            flags, off, seg = unpack_pub(buf, body)
            nul = find(b"\0", body + 10, rec_end)
            if nul < 0:
                raise _unterminated(kind, pos, path)
            name = buf[body + 10 : nul].decode("utf-8", "replace")
            rva = vas[seg - 1] + off if 0 < seg <= nsec else None
            publics.append(PubSym(name, seg, off, flags, pos, rva))
        elif code == _C_INLINE:
            if body + 12 > rec_end:
                raise _short(kind, pos, path)
            parent, scope_end, inlinee = _INLINE.unpack_from(buf, body)
            out.inline_sites.append(
                InlineSiteSym(cur_proc, inlinee, cur_inlinee, pos, parent, scope_end)
            )
            if nested:
                push((kind, cur_proc, cur_inlinee))
                cur_inlinee = inlinee
        elif code == _C_INLINE_END:
            if nested:
                if not stack or stack[-1][0] not in _INLINE_KINDS:
                    raise FormatError(f"unbalanced S_INLINESITE_END at offset {pos:#x}", path)
                _k, cur_proc, cur_inlinee = stack.pop()
        elif code == _C_SCOPE:
            # S_BLOCK32, S_WITH32, S_SEPCODE, managed procedures: only their nesting matters.
            if nested:
                push((kind, cur_proc, cur_inlinee))
        elif code == _C_THUNK:
            if body + 21 > rec_end:
                raise _short(kind, pos, path)
            _p, _e, _n, off, seg, length, ordinal = _THUNK.unpack_from(buf, body)
            name, _ = cstring(buf, body + 21, rec_end, "thunk symbol", path)
            out.thunks.append(ThunkSym(name, seg, off, length, ordinal, pos))
            if nested:
                push((kind, cur_proc, cur_inlinee))
        elif code == _C_HOTPATCH:
            if body + 4 > rec_end:
                raise _short(kind, pos, path)
            fid = struct.unpack_from("<I", buf, body)[0]
            name, _ = cstring(buf, body + 4, rec_end, "S_HOTPATCHFUNC", path)
            out.hotpatch_functions.append(HotpatchFuncSym(fid, name, pos))
        elif code == _C_COMPILE3:
            if body + _COMPILE3.size > rec_end:
                raise _short(kind, pos, path)
            flags, machine, *v = _COMPILE3.unpack_from(buf, body)
            version = cstring_tail(buf, body + _COMPILE3.size, rec_end, "S_COMPILE3", path)
            if out.compile is None:
                out.compile = CompileSym(
                    kind,
                    flags,
                    machine,
                    (v[0], v[1], v[2], v[3]),
                    (v[4], v[5], v[6], v[7]),
                    version,
                )
        elif code == _C_COMPILE2:
            if body + _COMPILE2.size > rec_end:
                raise _short(kind, pos, path)
            flags, machine, *v = _COMPILE2.unpack_from(buf, body)
            version = cstring_tail(buf, body + _COMPILE2.size, rec_end, "S_COMPILE2", path)
            if out.compile is None:
                out.compile = CompileSym(
                    kind, flags, machine, (v[0], v[1], v[2], 0), (v[3], v[4], v[5], 0), version
                )
        elif code == _C_OBJNAME:
            if body + 4 > rec_end:
                raise _short(kind, pos, path)
            sig = struct.unpack_from("<I", buf, body)[0]
            name = cstring_tail(buf, body + 4, rec_end, "S_OBJNAME", path)
            if out.objname is None:
                out.objname = ObjNameSym(sig, name)
        pos = rec_end
    if nested and stack:
        raise FormatError(
            f"{len(stack)} symbol scope(s) not closed by S_END before offset {end:#x}", path
        )
    out.record_count = count
    return out
