"""The instruction normaliser on hand-assembled code (no compiler needed).

Byte strings were checked with llvm-mc-22 / llvm-objdump-22 when written; the
instruction is noted next to each one.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pehotpatch.disasm import HOTPATCH_NOPS, Machine, NormalizedCode, Ref, normalize

X64, X86, ARM64 = Machine.X64, Machine.X86, Machine.ARM64
IB64 = 0x180000000
IB32 = 0x10000000


def h(s: str) -> bytes:
    return bytes.fromhex(s.replace(" ", ""))


def norm(machine, code, rva, relocs=()):
    ib = IB32 if machine is X86 else IB64
    return normalize(machine, code, rva, image_base=ib, relocs=relocs)


def shape_lines(n: NormalizedCode) -> list[str]:
    """The shape's lines without the trailing space of operand-less instructions."""
    return [line.rstrip() for line in n.shape.split("\n")]


def sym(n: NormalizedCode):
    return n.shape, [(r.kind, r.target) for r in n.refs]


# ---- x64 encoders (for layout tests) ----------------------------------------------------
def rel32(at_end: int, target: int) -> bytes:
    return struct.pack("<i", target - at_end)


class X64Builder:
    """Builds a function at ``rva`` whose external targets are absolute RVAs."""

    def __init__(self, rva: int):
        self.rva = rva
        self.code = bytearray()

    def here(self) -> int:
        return self.rva + len(self.code)

    def raw(self, b: bytes) -> X64Builder:
        self.code += b
        return self

    def call(self, target: int) -> X64Builder:  # e8 rel32
        return self.raw(b"\xe8" + rel32(self.here() + 5, target))

    def jmp(self, target: int) -> X64Builder:  # e9 rel32
        return self.raw(b"\xe9" + rel32(self.here() + 5, target))

    def je32(self, target: int) -> X64Builder:  # 0f 84 rel32
        return self.raw(b"\x0f\x84" + rel32(self.here() + 6, target))

    def load(self, target: int) -> X64Builder:  # mov rax, qword ptr [rip + X]
        return self.raw(b"\x48\x8b\x05" + rel32(self.here() + 7, target))

    def store16(self, target: int) -> X64Builder:  # mov word ptr [rip + X], 0x1234
        return self.raw(b"\x66\xc7\x05" + rel32(self.here() + 9, target) + b"\x34\x12")

    def lea(self, target: int) -> X64Builder:  # lea rcx, [rip + X]
        return self.raw(b"\x48\x8d\x0d" + rel32(self.here() + 7, target))

    def call_iat(self, slot: int) -> X64Builder:  # call qword ptr [rip + X]
        return self.raw(b"\xff\x15" + rel32(self.here() + 6, slot))

    def jmp_iat(self, slot: int) -> X64Builder:  # jmp qword ptr [rip + X]
        return self.raw(b"\xff\x25" + rel32(self.here() + 6, slot))

    def bytes(self) -> bytes:
        return bytes(self.code)


# ---- x64 ----------------------------------------------------------------------------------
def test_x64_rip_relative_with_operand_size_prefix():
    # 66 89 05 00100000        mov word ptr [rip + 0x1000], ax
    # 66 c7 05 00100000 3412   mov word ptr [rip + 0x1000], 0x1234
    # 66 0f 6f 05 e0ffffff     movdqa xmm0, xmmword ptr [rip - 0x20]
    # 66 83 3d 40000000 05     cmp word ptr [rip + 0x40], 5
    # c3                       ret
    code = h("6689050010000066c705001000003412660f6f05e0ffffff66833d4000000005c3")
    n = norm(X64, code, 0x5000)
    assert [(r.offset, r.kind, r.target) for r in n.refs] == [
        (0x00, "data", 0x5007 + 0x1000),
        (0x07, "data", 0x5010 + 0x1000),
        (0x10, "data", 0x5018 - 0x20),
        (0x18, "data", 0x5020 + 0x40),
    ]
    assert shape_lines(n) == [
        "mov word ptr [@], ax",
        "mov word ptr [@], 0x1234",
        "movdqa xmm0, xmmword ptr [@]",
        "cmp word ptr [@], 5",
        "ret",
    ]
    assert n.insn_offsets == [0, 7, 0x10, 0x18, 0x20]
    assert n.first_insn_size == 7


def test_x64_calls_jumps_and_iat():
    b = X64Builder(0x2000)
    b.raw(h("4883ec28"))  # sub rsp, 0x28
    b.call(0x9000).call_iat(0x30F0).load(0x40010).lea(0x1000)
    b.raw(h("85c0"))  # test eax, eax
    b.raw(h("7405"))  # je +5 (internal)
    b.je32(0x7777)  # conditional tail call
    b.raw(h("4883c428"))  # add rsp, 0x28
    b.jmp_iat(0x30F8)
    n = norm(X64, b.bytes(), 0x2000)
    assert [(r.kind, r.target) for r in n.refs] == [
        ("call", 0x9000),
        ("indirect_call", 0x30F0),
        ("data", 0x40010),
        ("data", 0x1000),
        ("jump", 0x7777),
        ("indirect_jump", 0x30F8),
    ]
    assert n.shape.count("@") == len(n.refs)
    je = n.insn_offsets[6]
    assert n.internal_targets == {je + 2 + 5}
    assert not n.entry_is_branch_target
    assert [r.offset for r in n.refs] == [n.insn_offsets[i] for i in (1, 2, 3, 4, 7, 9)]


@settings(max_examples=60, deadline=None)
@given(
    rva1=st.integers(0x1000, 0x7FFF0000),
    rva2=st.integers(0x1000, 0x7FFF0000),
    targets=st.lists(st.integers(0, 0x7FFFFFFF), min_size=7, max_size=7),
)
def test_x64_moved_function_has_same_shape_and_refs(rva1, rva2, targets):
    def build(rva, t):
        b = X64Builder(rva)
        b.raw(h("4053"))  # push rbx (rex)
        b.call(t[0]).load(t[1]).store16(t[2]).lea(t[3]).call_iat(t[4])
        b.raw(h("7402"))  # je +2
        b.je32(t[5])
        b.raw(h("5b"))  # pop rbx
        b.jmp(t[6])
        return b.bytes()

    # targets that fall inside the function itself are internal, keep them outside
    def outside(rva, t):
        return [x if not (rva - 0x100 <= x < rva + 0x100) else x ^ 0x40000000 for x in t]

    t = outside(rva2, outside(rva1, targets))
    n1 = norm(X64, build(rva1, t), rva1)
    n2 = norm(X64, build(rva2, t), rva2)
    assert sym(n1) == sym(n2)
    assert [r.target for r in n1.refs] == t[:5] + t[5:]
    assert [r.offset for r in n1.refs] == [r.offset for r in n2.refs]
    # A different target is a different function.
    t2 = list(t)
    t2[3] ^= 0x10
    assert sym(norm(X64, build(rva2, t2), rva2)) != sym(n1)


def test_x64_changed_instruction_changes_shape():
    a = X64Builder(0x1000).call(0x5000).raw(h("83c001c3")).bytes()  # add eax, 1; ret
    b = X64Builder(0x3000).call(0x5000).raw(h("83c002c3")).bytes()  # add eax, 2; ret
    assert norm(X64, a, 0x1000).shape != norm(X64, b, 0x3000).shape


def test_x64_hotpatch_nop_is_not_part_of_shape():
    # 90 ; 66 90 ; ff c0 ; 83 f8 0a ; 75 f9 ; c3   (hot-patch no-op then a loop to 2)
    with_nop = h("6690ffc083f80a75f9c3")
    without = h("ffc083f80a75f9c3")  # the same loop at offset 0
    a = norm(X64, with_nop, 0x1000)
    b = norm(X64, without, 0x2000)
    assert a.hotpatch_nop == HOTPATCH_NOPS[X64] == b"\x66\x90"
    assert b.hotpatch_nop == b""
    assert a.shape == b.shape
    assert not a.shape.startswith("nop")
    assert a.insn_offsets[:2] == [0, 2]
    assert a.first_insn_size == 2
    # the loop goes back to the first instruction after the no-op, not to the entry
    assert not a.entry_is_branch_target
    assert a.internal_targets == {2}
    # without the no-op the same loop jumps to the entry
    assert b.entry_is_branch_target
    assert b.internal_targets == {0}


def test_x64_entry_branch_target():
    # ff c0 inc eax ; 83 f8 0a cmp eax, 10 ; 75 f9 jne 0 ; c3 ret
    assert norm(X64, h("ffc083f80a75f9c3"), 0x1000).entry_is_branch_target
    # ff c0 ; 83 f8 0a ; 75 fb jne 2 ; c3
    n = norm(X64, h("ffc083f80a75fbc3"), 0x1000)
    assert not n.entry_is_branch_target and n.internal_targets == {2}
    # recursion (a call to the entry) is not a jump back into the patched bytes
    rec = X64Builder(0x1000).raw(h("ffc0")).call(0x1000).raw(h("c3")).bytes()
    n = norm(X64, rec, 0x1000)
    assert not n.entry_is_branch_target and n.internal_targets == {0} and n.refs == []


def test_x64_trailing_padding_ignored():
    body = X64Builder(0x1000).call(0x4000).raw(h("c3")).bytes()
    a = norm(X64, body, 0x1000)
    b = norm(X64, body + b"\xcc" * 10, 0x1000)
    c = norm(X64, body + h("0f1f440000") + b"\xcc", 0x1000)  # nop dword ptr [rax + rax]
    assert sym(a) == sym(b) == sym(c)
    assert a.size == b.size == c.size == len(body)
    assert a.insn_offsets == b.insn_offsets


def test_x64_undecodable_bytes_become_byte_tokens():
    # c3 ret ; 06 (invalid in 64-bit mode) ; ff 15 <truncated> ; aa stosb
    a = norm(X64, h("c306ff15aa"), 0x1000)
    assert shape_lines(a)[0] == "ret"
    assert ".byte 0x06" in a.shape
    assert sum(1 for line in shape_lines(a) if line.startswith(".byte")) == 3
    # equal data compares equal, different data does not
    assert a.shape == norm(X64, h("c306ff15aa"), 0x7000).shape
    assert a.shape != norm(X64, h("c306ff15ab"), 0x1000).shape


def test_x64_jump_table_after_imagebase_lea():
    # lea rdx, [rip -> __ImageBase]; mov ecx, dword ptr [rdx + rax*4 + 0x4560];
    # add rcx, rdx; jmp rcx
    b = X64Builder(0x1800).raw(h("83f803")).raw(h("7710"))  # cmp eax, 3 ; ja +0x10
    b.raw(b"\x48\x8d\x15" + rel32(b.here() + 7, 0))  # lea rdx, [rip + X] -> RVA 0
    b.raw(h("8b8c82") + struct.pack("<I", 0x4560))  # mov ecx, dword ptr [rdx + rax*4 + 0x4560]
    b.raw(h("4801d1ffe1"))  # add rcx, rdx ; jmp rcx
    b.raw(h("c3" * 16))
    n = norm(X64, b.bytes(), 0x1800)
    assert [(r.kind, r.target) for r in n.refs] == [("data", 0), ("data", 0x4560)]
    assert "mov ecx, dword ptr [rdx + rax*4 + @]" in n.shape
    # the same table code elsewhere, with the table elsewhere, has the same shape
    b2 = X64Builder(0x9000).raw(h("83f803")).raw(h("7710"))
    b2.raw(b"\x48\x8d\x15" + rel32(b2.here() + 7, 0))
    b2.raw(h("8b8c82") + struct.pack("<I", 0x8880))
    b2.raw(h("4801d1ffe1")).raw(h("c3" * 16))
    n2 = norm(X64, b2.bytes(), 0x9000)
    assert n2.shape == n.shape
    # a plain [reg + reg*4 + disp] without the lea stays literal
    n3 = norm(X64, h("8b8c82") + struct.pack("<I", 0x4560) + h("c3"), 0x1000)
    assert n3.refs == [] and "0x4560" in n3.shape


def test_x64_immediate_without_reloc_stays_literal_and_with_reloc_is_a_ref():
    # 48 b8 <imm64>  movabs rax, imm64 ; c3
    code = h("48b8") + struct.pack("<Q", IB64 + 0x3000) + h("c3")
    assert norm(X64, code, 0x1000).refs == []
    n = norm(X64, code, 0x1000, relocs=[0x1002])
    assert n.refs == [Ref(0, "data", 0x3000)]
    assert shape_lines(n)[0] == "movabs rax, @"


def test_x64_rip_target_inside_function_is_an_offset():
    b = X64Builder(0x1000).raw(h("90"))
    b.lea(0x1000 + 0x10)  # address of something in this function
    b.raw(h("c3") + b"\x00" * 8)
    n = norm(X64, b.bytes(), 0x1000)
    assert n.refs == []
    assert "lea rcx, [+0x10]" in n.shape


def test_listing_renders_names():
    b = X64Builder(0x1000).call(0x5000).load(0x8000).raw(h("c3"))
    names = {0x5000: "helper", 0x8000: "g_counter"}
    n = norm(X64, b.bytes(), 0x1000)
    assert n.listing(names.__getitem__) == [
        "call helper",
        "mov rax, qword ptr [g_counter]",
        "ret",
    ]
    assert n.key(names.__getitem__) == (
        n.shape,
        (("call", "helper"), ("data", "g_counter")),
    )


def test_empty_code():
    for m in (X64, X86, ARM64):
        n = normalize(m, b"", 0x1000, image_base=0)
        assert n.shape == "" and n.refs == [] and n.insn_offsets == []
        assert not n.entry_is_branch_target


def test_machine_given_as_string_and_memoryview():
    code = X64Builder(0x1000).call(0x5000).raw(h("c3")).bytes()
    a = normalize("x64", memoryview(code), 0x1000, image_base=IB64)
    assert a.refs == [Ref(0, "call", 0x5000)]


# ---- x86 ----------------------------------------------------------------------------------
# a1 <abs32>            mov eax, dword ptr [abs]
# 8b 04 8d <abs32>      mov eax, dword ptr [ecx*4 + abs]
# 68 <imm32>            push imm
# c7 05 <abs32> <imm32> mov dword ptr [abs], imm
# ff 15 <abs32>         call dword ptr [abs]
# ff 24 8d <abs32>      jmp dword ptr [ecx*4 + abs]
# e8 <rel32>            call rel
def x86_func(rva: int, g: int, t: int, iat: int, callee: int, lit: int) -> tuple[bytes, list]:
    c = bytearray(h("6690"))  # clang's hot-patch no-op
    relocs = []

    def absaddr(rv):
        relocs.append(rva + len(c))
        c.extend(struct.pack("<I", IB32 + rv))

    c += h("a1")
    absaddr(g)
    c += h("8b048d")
    absaddr(t)
    c += h("68") + struct.pack("<I", lit)  # a literal that looks like an address
    c += h("c705")
    absaddr(g + 4)
    absaddr(t + 8)
    c += h("ff15")
    absaddr(iat)
    c += h("e8") + struct.pack("<i", callee - (rva + len(c) + 5))
    c += h("ff248d")
    absaddr(t + 0x40)
    c += h("cccc")
    return bytes(c), relocs


def test_x86_relocated_absolutes_are_refs():
    code, relocs = x86_func(0x1000, 0x3000, 0x3100, 0x2010, 0x1800, IB32 + 0x3000)
    n = norm(X86, code, 0x1000, relocs)
    assert n.hotpatch_nop == b"\x66\x90"
    assert [(r.kind, r.target) for r in n.refs] == [
        ("data", 0x3000),
        ("data", 0x3100),
        ("data", 0x3004),
        ("data", 0x3108),
        ("indirect_call", 0x2010),
        ("call", 0x1800),
        ("data", 0x3140),
    ]
    assert shape_lines(n) == [
        "mov eax, dword ptr [@]",
        "mov eax, dword ptr [ecx*4 + @]",
        f"push {IB32 + 0x3000:#x}",  # not covered by a relocation: a literal
        "mov dword ptr [@], @",
        "call dword ptr [@]",
        "call @",
        "jmp dword ptr [ecx*4 + @]",
    ]
    assert [r.offset for r in n.refs] == [2, 7, 19, 19, 29, 35, 40]


@settings(max_examples=40, deadline=None)
@given(
    rva1=st.integers(0x1000, 0x0FFF0000),
    rva2=st.integers(0x1000, 0x0FFF0000),
    data=st.integers(0x10000000, 0x1FFF0000),  # never inside the function
)
def test_x86_moved_function_same_shape(rva1, rva2, data):
    callee = 0x0FFFF800  # beyond both functions

    def build(rva, g):
        code, relocs = x86_func(rva, g, data + 0x100, data + 0x40, callee, 7)
        return norm(X86, code, rva, relocs)

    n1, n2 = build(rva1, data), build(rva2, data)
    assert sym(n1) == sym(n2)
    assert sym(build(rva2, data + 4)) != sym(n1)


def test_x86_mov_edi_edi_is_the_hotpatch_nop():
    # 8b ff mov edi, edi ; 55 push ebp ; 8b ec mov ebp, esp ; 5d pop ebp ; c3 ret
    a = norm(X86, h("8bff558bec5dc3"), 0x1000)
    b = norm(X86, h("558bec5dc3"), 0x1000)
    assert a.hotpatch_nop == HOTPATCH_NOPS[X86] == b"\x8b\xff"
    assert a.shape == b.shape and a.shape.startswith("push ebp")


def test_x86_relocs_outside_the_function_are_ignored():
    code = h("a1") + struct.pack("<I", IB32 + 0x3000) + h("c3")
    n = norm(X86, code, 0x1000, [0x0FF0, 0x1001, 0x1006, 0x2000])
    assert n.refs == [Ref(0, "data", 0x3000)]


def test_x86_reloc_in_undecodable_bytes_still_counts():
    # ret, then a jump table of two absolute addresses (decoded as garbage)
    code = h("c3") + struct.pack("<II", IB32 + 0x1010, IB32 + 0x1020)
    n = norm(X86, code, 0x1000, [0x1001, 0x1005])
    assert sorted(r.target for r in n.refs) == [0x1010, 0x1020]
    assert n.shape.count("@") == 2
    moved = h("c3") + struct.pack("<II", IB32 + 0x5010, IB32 + 0x5020)
    m = norm(X86, moved, 0x5000, [0x5001, 0x5005])
    assert m.shape == n.shape


# ---- ARM64 ----------------------------------------------------------------------------------
def a64_adrp(rd, pc, target):
    imm = (target >> 12) - (pc >> 12)
    return 0x90000000 | ((imm & 3) << 29) | (((imm >> 2) & 0x7FFFF) << 5) | rd


def a64_add(rd, rn, imm12):
    return 0x91000000 | (imm12 << 10) | (rn << 5) | rd


def a64_ldr_x(rt, rn, imm):
    return 0xF9400000 | ((imm >> 3) << 10) | (rn << 5) | rt


def a64_ldr_w(rt, rn, imm):
    return 0xB9400000 | ((imm >> 2) << 10) | (rn << 5) | rt


def a64_str_w(rt, rn, imm):
    return 0xB9000000 | ((imm >> 2) << 10) | (rn << 5) | rt


def a64_bl(pc, target):
    return 0x94000000 | (((target - pc) >> 2) & 0x3FFFFFF)


def a64_b(pc, target):
    return 0x14000000 | (((target - pc) >> 2) & 0x3FFFFFF)


def a64_bne(pc, target):
    return 0x54000001 | ((((target - pc) >> 2) & 0x7FFFF) << 5)


def a64_mov(rd, rm):
    return 0xAA0003E0 | (rm << 16) | rd


A64_RET = 0xD65F03C0


def a64_func(pc, g1, g2, callee, tail):
    """Words checked with llvm-objdump-22:
    adrp x8, g1 ; add x8, x8, :lo12:g1 ; adrp x9, g2 ; ldr x0, [x9, :lo12:g2] ;
    ldr w1, [x9, :lo12:g2+0x10] ; str w1, [x9, :lo12:g2+0x10] ; mov x9, x0 ;
    ldr w2, [x9, #4] ; bl callee ; b.ne <entry> ; b tail ; ret"""
    w = [
        a64_adrp(8, pc, g1),
        a64_add(8, 8, g1 & 0xFFF),
        a64_adrp(9, pc + 8, g2),
        a64_ldr_x(0, 9, g2 & 0xFF8),
        a64_ldr_w(1, 9, (g2 & 0xFF8) + 0x10),
        a64_str_w(1, 9, (g2 & 0xFF8) + 0x10),
        a64_mov(9, 0),
        a64_ldr_w(2, 9, 4),
        a64_bl(pc + 32, callee),
        a64_bne(pc + 36, pc),
        a64_b(pc + 40, tail),
        A64_RET,
    ]
    return struct.pack(f"<{len(w)}I", *w)


def test_arm64_adrp_pairs_become_one_ref():
    pc = 0x11000
    n = norm(ARM64, a64_func(pc, 0x23456, 0x30010, 0x5000, 0x90000), pc)
    assert [(r.offset, r.kind, r.target) for r in n.refs] == [
        (0, "data", 0x23456),  # adrp x8 + add
        (8, "data", 0x30010),  # adrp x9 + ldr x0
        (16, "data", 0x30020),  # a second use of x9's page
        (20, "data", 0x30020),
        (32, "call", 0x5000),
        (40, "jump", 0x90000),
    ]
    assert shape_lines(n) == [
        "adrp x8, @",
        "add x8, x8, #:lo12:",
        "adrp x9, @",
        "ldr x0, [x9, #:lo12:]",
        "ldr w1, [x9, #:lo12:@]",
        "str w1, [x9, #:lo12:@]",
        "mov x9, x0",
        "ldr w2, [x9, #4]",  # x9 was overwritten: a plain offset
        "bl @",
        "b.ne #0",
        "b @",
        "ret",
    ]
    assert n.entry_is_branch_target
    assert n.internal_targets == {0}
    assert n.hotpatch_nop == b"" and n.first_insn_size == 4


@settings(max_examples=60, deadline=None)
@given(
    pc1=st.integers(0x1000 >> 2, 0x06000000 >> 2).map(lambda x: x * 4),
    pc2=st.integers(0x1000 >> 2, 0x06000000 >> 2).map(lambda x: x * 4),
    g1=st.integers(0x1000, 0x0FFFFFFF),
    g2=st.integers(0x1000, 0x0FFFFFFF),
)
def test_arm64_moved_function_same_shape(pc1, pc2, g1, g2):
    g2 &= ~7
    callee, tail = 0x800, 0x07000000  # within reach of b (+-128 MiB)
    n1 = norm(ARM64, a64_func(pc1, g1, g2, callee, tail), pc1)
    n2 = norm(ARM64, a64_func(pc2, g1, g2, callee, tail), pc2)
    assert sym(n1) == sym(n2)
    assert n1.refs[0].target == g1 and n1.refs[1].target == g2
    n3 = norm(ARM64, a64_func(pc2, g1 + 8, g2, callee, tail), pc2)
    assert sym(n3) != sym(n1)


def test_arm64_adr_and_literal_load():
    pc = 0x4000
    adr_x0 = 0x10000000 | ((0x40 & 3) << 29) | (((0x40 >> 2) & 0x7FFFF) << 5)  # adr x0, pc+0x40
    ldr_lit = 0x58000000 | (((0x80 >> 2) & 0x7FFFF) << 5) | 1  # ldr x1, pc+4+0x80
    code = struct.pack("<3I", adr_x0, ldr_lit, A64_RET)
    n = norm(ARM64, code, pc)
    assert [(r.kind, r.target) for r in n.refs] == [("data", pc + 0x40), ("data", pc + 4 + 0x80)]
    assert shape_lines(n) == ["adr x0, @", "ldr x1, @", "ret"]


def test_arm64_padding_and_partial_word():
    pc = 0x4000
    code = struct.pack("<2I", a64_bl(pc, 0x9000), A64_RET)
    a = norm(ARM64, code + b"\x00" * 8, pc)
    assert shape_lines(a) == ["bl @", "ret"] and a.size == 8
    b = norm(ARM64, code + b"\x01\x02", pc)
    assert b.shape.endswith(".byte 0x01, 0x02") and b.size == 10


def test_arm64_call_forgets_caller_saved_page_registers():
    pc = 0x4000
    w = [
        a64_adrp(8, pc, 0x20000),
        a64_bl(pc + 4, 0x9000),
        a64_ldr_w(0, 8, 0x10),  # x8 is not the page any more after the call
        A64_RET,
    ]
    n = norm(ARM64, struct.pack("<4I", *w), pc)
    assert [(r.kind, r.target) for r in n.refs] == [("data", 0x20000), ("call", 0x9000)]
    assert "ldr w0, [x8, #0x10]" in n.shape


@pytest.mark.parametrize("machine", [X64, X86, ARM64])
def test_same_bytes_same_result_twice(machine):
    code = bytes(range(256)) * 2
    a = normalize(machine, code, 0x1000, image_base=0x400000)
    b = normalize(machine, code, 0x1000, image_base=0x400000)
    assert sym(a) == sym(b)
    assert a.insn_offsets == b.insn_offsets
    assert a.size <= len(code)


# ---- jump tables inside the function's range ---------------------------------------------
def msvc_x64_switch(rva: int) -> bytes:
    """cmp ecx, 2 ; ja default ; lea rdx, [__ImageBase] ;
    mov eax, dword ptr [rdx + rcx*4 + table] ; add rax, rdx ; jmp rax ;
    three cases and a default (mov eax, N ; ret), int3 to 4-byte alignment, then the
    table of case RVAs, as MSVC lays it out."""
    b = X64Builder(rva)
    b.raw(h("83f902"))  # cmp ecx, 2
    b.raw(h("7725"))  # ja +0x25 -> default at 0x2a
    b.raw(b"\x48\x8d\x15" + rel32(b.here() + 7, 0))  # lea rdx, [rip -> RVA 0]
    table_at = 0x30
    b.raw(h("8b848a") + struct.pack("<I", rva + table_at))  # mov eax, [rdx + rcx*4 + T]
    b.raw(h("4801d0ffe0"))  # add rax, rdx ; jmp rax
    cases = []
    for k in range(3):
        cases.append(len(b.code))
        b.raw(h("b8") + struct.pack("<I", k + 1) + h("c3"))  # mov eax, k + 1 ; ret
    assert len(b.code) == 0x2A
    b.raw(h("31c0c3"))  # default: xor eax, eax ; ret
    b.raw(h("cc") * (table_at - len(b.code)))
    for c in cases:
        b.raw(struct.pack("<I", rva + c))
    return b.bytes()


def test_x64_jump_table_inside_function_is_data():
    a = norm(X64, msvc_x64_switch(0x1000), 0x1000)
    b = norm(X64, msvc_x64_switch(0x7654), 0x7654)
    assert sym(a) == sym(b)
    assert [(r.kind, r.target) for r in a.refs] == [("data", 0)]
    lines = shape_lines(a)
    assert lines[-3:] == [".long +0x18", ".long +0x1e", ".long +0x24"]
    assert "mov eax, dword ptr [rdx + rcx*4 + +0x30]" in lines
    assert {0x18, 0x1E, 0x24} <= a.internal_targets
    # a different case target is a different function
    c = bytearray(msvc_x64_switch(0x1000))
    c[-4] += 1
    assert sym(norm(X64, bytes(c), 0x1000)) != sym(a)


def test_x64_trailing_table_of_a_function_chunk():
    # a chunk ending in ret whose table (used from the parent chunk) follows it
    def chunk(rva, parent):
        code = h("4883c428c3") + b"\x90" * ((-(rva + 5)) % 4)  # add rsp, 0x28 ; ret ; nop
        return code + struct.pack("<3I", parent + 0x10, parent + 0x40, parent + 0x90)

    a = norm(X64, chunk(0x5003, 0x4000), 0x5003)
    b = norm(X64, chunk(0x9001, 0x8000), 0x9001)
    assert [(r.kind, r.target) for r in a.refs] == [
        ("data", 0x4010),
        ("data", 0x4040),
        ("data", 0x4090),
    ]
    assert shape_lines(a)[-4:] == ["ret"] + [".long @"] * 3
    assert sym(a) != sym(b)  # other parent addresses
    c = norm(X64, chunk(0x9001, 0x4000), 0x9001)  # the same table, other alignment
    assert sym(a) == sym(c)


def test_x64_table_opening_a_range_is_data():
    # MSVC can give a switch table placed before a function tail its own .pdata entry:
    # the range starts with the table's RVAs (cases of the parent chunk).
    def chunk(rva, parent):
        return struct.pack("<5I", *(parent + k * 0x13 for k in range(5))) + h("4883c428c3")

    a = norm(X64, chunk(0x5004, 0x4000), 0x5004)
    assert shape_lines(a)[:6] == [".long @"] * 5 + ["add rsp, 0x28"]
    assert [r.target for r in a.refs] == [0x4000 + k * 0x13 for k in range(5)]
    moved = norm(X64, chunk(0x9104, 0x8100), 0x9104)
    assert moved.shape == a.shape and moved.refs[0].target == 0x8100
    # three values are not enough to call it a table
    short = norm(X64, struct.pack("<3I", 0x4000, 0x4013, 0x4026) + h("c3"), 0x5004)
    assert not shape_lines(short)[0].startswith(".long")


def test_x64_chunk_indexing_from_the_parents_image_base():
    # A function chunk without its own __ImageBase load: the register came from the
    # parent chunk, and the displacement is the RVA of a table that moves with the data.
    a = norm(X64, h("4a8b84df50f72e00c3"), 0x187316)  # mov rax, [rdi + r11*8 + 0x2ef750]
    assert shape_lines(a)[0] == "mov rax, qword ptr [rdi + r11*8 + @]"
    assert [(r.kind, r.target) for r in a.refs] == [("data", 0x2EF750)]
    assert a.position_dependent
    # small displacements are struct offsets, not addresses
    b = norm(X64, h("4a8b84df20000000c3"), 0x187316)  # mov rax, [rdi + r11*8 + 0x20]
    assert b.refs == [] and "0x20" in shape_lines(b)[0]


def test_x86_jump_table_with_relocations():
    def func(rva):
        c = bytearray(h("8b442404"))  # mov eax, dword ptr [esp + 4]
        c += h("83f802")  # cmp eax, 2
        c += h("7719")  # ja default (+0x19 -> 0x22)
        relocs = [rva + len(c) + 3]
        c += h("ff2485") + struct.pack("<I", IB32 + rva + 0x28)  # jmp [eax*4 + table]
        cases = []
        for k in range(3):
            cases.append(len(c))
            c += h("b8") + struct.pack("<I", k + 1) + h("c3")  # mov eax, k + 1 ; ret
        assert len(c) == 0x22
        c += h("31c0c3cccccc")  # default: xor eax, eax ; ret ; int3 padding
        for x in cases:
            relocs.append(rva + len(c))
            c += struct.pack("<I", IB32 + rva + x)
        return bytes(c), relocs

    (ca, ra), (cb, rb) = func(0x1000), func(0x3333)
    a, b = norm(X86, ca, 0x1000, ra), norm(X86, cb, 0x3333, rb)
    assert sym(a) == sym(b)
    assert a.refs == []
    assert shape_lines(a)[-3:] == [".long +0x10", ".long +0x16", ".long +0x1c"]
    assert "jmp dword ptr [eax*4 + +0x28]" in shape_lines(a)
    assert shape_lines(a)[-5:-3] == ["xor eax, eax", "ret"]  # int3 padding not shown


@settings(max_examples=200, deadline=None)
@given(
    machine=st.sampled_from([X64, X86]),
    nop=st.booleans(),
    body=st.lists(
        st.one_of(
            st.binary(min_size=1, max_size=6),
            st.sampled_from([h("ffc0"), h("85c0"), h("c3"), h("90"), h("e8") + b"\0" * 4]),
            st.integers(0, 40).map(lambda k: bytes([0xEB, (-k - 2) & 0xFF])),  # jmp back
            st.integers(0, 40).map(lambda k: bytes([0x75, (-k - 2) & 0xFF])),  # jne back
        ),
        max_size=30,
    ),
)
def test_entry_search_agrees_with_full_scan(machine, nop, body):
    code = (h("6690") if nop else b"") + b"".join(body)
    a = normalize(machine, code, 0x4000, image_base=0x400000)
    b = normalize(machine, code, 0x4000, image_base=0x400000)
    b._scan_branches()  # every target, then the entry test on them
    assert a.entry_is_branch_target == b.entry_is_branch_target
    assert a.internal_targets == b.internal_targets
