"""CodeView type leaves: the record kinds (``LF_*``), their attribute bits, calling
conventions, the built-in (simple) types below index 0x1000 and the limits the type
decoder keeps to.
"""

from __future__ import annotations

MAX_DEPTH = 96
MAX_NAME = 1 << 14  # characters of a parameter list in a composed type name
MAX_FIELDS = 1 << 16  # members across one struct's field-list chain
# Characters of composed names (type names, signatures) one table keeps: beyond it names
# are no longer composed (``<type 0x1234>``).  Nested function types can make every name
# of a crafted stream MAX_NAME long; this keeps their total, and the time, bounded.
NAME_BUDGET = 1 << 26
FIRST_TYPE_INDEX = 0x1000

LF_VTSHAPE = 0x000A
LF_LABEL = 0x000E
LF_ENDPRECOMP = 0x0014
LF_MODIFIER = 0x1001
LF_POINTER = 0x1002
LF_PROCEDURE = 0x1008
LF_MFUNCTION = 0x1009
LF_ARGLIST = 0x1201
LF_FIELDLIST = 0x1203
LF_BITFIELD = 0x1205
LF_METHODLIST = 0x1206
LF_BCLASS = 0x1400
LF_VBCLASS = 0x1401
LF_IVBCLASS = 0x1402
LF_INDEX = 0x1404
LF_VFUNCTAB = 0x1409
LF_ENUMERATE = 0x1502
LF_ARRAY = 0x1503
LF_CLASS = 0x1504
LF_STRUCTURE = 0x1505
LF_UNION = 0x1506
LF_ENUM = 0x1507
LF_PRECOMP = 0x1509
LF_MEMBER = 0x150D
LF_STMEMBER = 0x150E
LF_METHOD = 0x150F
LF_NESTTYPE = 0x1510
LF_ONEMETHOD = 0x1511
LF_TYPESERVER2 = 0x1515
LF_INTERFACE = 0x1519
LF_BINTERFACE = 0x151A
LF_VFTABLE = 0x151D
LF_FUNC_ID = 0x1601
LF_MFUNC_ID = 0x1602
LF_BUILDINFO = 0x1603
LF_SUBSTR_LIST = 0x1604
LF_STRING_ID = 0x1605
LF_UDT_SRC_LINE = 0x1606
LF_UDT_MOD_SRC_LINE = 0x1607

UDT_KINDS = frozenset({LF_CLASS, LF_STRUCTURE, LF_UNION, LF_INTERFACE, LF_ENUM})

# class/struct/union/enum property bits
PROP_PACKED = 0x0001
PROP_FORWARD_REF = 0x0080
PROP_SCOPED = 0x0100
PROP_HAS_UNIQUE_NAME = 0x0200

# modifier bits
MOD_CONST = 0x1
MOD_VOLATILE = 0x2
MOD_UNALIGNED = 0x4

# pointer attributes
PTR_KIND_MASK = 0x1F
PTR_MODE_SHIFT = 5
PTR_MODE_MASK = 0x7
PTR_CONST = 1 << 10
PTR_VOLATILE = 1 << 9
PTR_UNALIGNED = 1 << 11
PTR_RESTRICT = 1 << 12
PTR_SIZE_SHIFT = 13
PTR_SIZE_MASK = 0x3F
PTR_MODE_POINTER = 0
PTR_MODE_LVALUE_REF = 1
PTR_MODE_DATA_MEMBER = 2
PTR_MODE_MEMBER_FUNCTION = 3
PTR_MODE_RVALUE_REF = 4
PTR_KIND_SIZE = {0x00: 2, 0x01: 4, 0x02: 4, 0x0A: 4, 0x0B: 6, 0x0C: 8}

CALLING_CONVENTIONS = {
    0x00: "__cdecl",
    0x01: "__far __cdecl",
    0x02: "__pascal",
    0x03: "__far __pascal",
    0x04: "__fastcall",
    0x05: "__far __fastcall",
    0x07: "__stdcall",
    0x08: "__far __stdcall",
    0x09: "__syscall",
    0x0A: "__far __syscall",
    0x0B: "__thiscall",
    0x0C: "__mipscall",
    0x0D: "__generic",
    0x0E: "__alphacall",
    0x0F: "__ppccall",
    0x10: "__shcall",
    0x11: "__armcall",
    0x12: "__am33call",
    0x13: "__tricall",
    0x14: "__sh5call",
    0x15: "__m32rcall",
    0x16: "__clrcall",
    0x17: "__inline",
    0x18: "__vectorcall",
    0x19: "__swiftcall",
}
CC_NEAR_C = 0x00
CC_THISCALL = 0x0B

SIMPLE_KINDS: dict[int, tuple[str, int | None]] = {
    0x00: ("<no type>", None),
    0x03: ("void", None),
    0x07: ("<not translated>", None),
    0x08: ("HRESULT", 4),
    0x10: ("signed char", 1),
    0x20: ("unsigned char", 1),
    0x70: ("char", 1),
    0x71: ("wchar_t", 2),
    0x7A: ("char16_t", 2),
    0x7B: ("char32_t", 4),
    0x7C: ("char8_t", 1),
    0x68: ("__int8", 1),
    0x69: ("unsigned __int8", 1),
    0x11: ("short", 2),
    0x21: ("unsigned short", 2),
    0x72: ("__int16", 2),
    0x73: ("unsigned __int16", 2),
    0x12: ("long", 4),
    0x22: ("unsigned long", 4),
    0x74: ("int", 4),
    0x75: ("unsigned int", 4),
    0x13: ("long long", 8),
    0x23: ("unsigned long long", 8),
    0x76: ("__int64", 8),
    0x77: ("unsigned __int64", 8),
    0x14: ("__int128", 16),
    0x24: ("unsigned __int128", 16),
    0x78: ("__int128", 16),
    0x79: ("unsigned __int128", 16),
    0x46: ("_Float16", 2),
    0x40: ("float", 4),
    0x45: ("float", 4),
    0x44: ("__float48", 6),
    0x41: ("double", 8),
    0x42: ("long double", 10),
    0x43: ("__float128", 16),
    0x56: ("_Complex _Float16", 4),
    0x50: ("_Complex float", 8),
    0x55: ("_Complex float", 8),
    0x54: ("_Complex __float48", 12),
    0x51: ("_Complex double", 16),
    0x52: ("_Complex long double", 20),
    0x53: ("_Complex __float128", 32),
    0x30: ("bool", 1),
    0x31: ("__bool16", 2),
    0x32: ("__bool32", 4),
    0x33: ("__bool64", 8),
    0x34: ("__bool128", 16),
}
# simple pointer modes -> pointer size (0 = direct, not a pointer)
SIMPLE_MODE_PTR_SIZE = {1: 2, 2: 4, 3: 4, 4: 4, 5: 6, 6: 8, 7: 16}


UDT_KEYWORD = {
    LF_STRUCTURE: "struct",
    LF_CLASS: "class",
    LF_INTERFACE: "interface",
    LF_UNION: "union",
    LF_ENUM: "enum",
}
UDT_PREFIXES = ("struct ", "class ", "union ", "enum ", "interface ")


def simple_type_size(ti: int) -> int | None:
    mode = (ti >> 8) & 0xF
    if mode:
        return SIMPLE_MODE_PTR_SIZE.get(mode)
    return SIMPLE_KINDS.get(ti & 0xFF, ("", None))[1]
