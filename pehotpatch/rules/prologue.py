"""HP7xx: can the base functions that the patch redirects be redirected safely?

The engine redirects a patched function by replacing the first instruction of the
*base* function with a jump (and, on classic x86 hot-patching, by writing a far jump
into the padding before it).  That needs, in the base image:

- x86/x64: a first instruction of at least two bytes, so that the replacement is one
  atomic write and no thread can be between two instructions it covers.  The 2-byte
  no-op that ``/hotpatch`` (clang ``-fms-hotpatch``) puts at the entry (``66 90`` on
  x64, ``mov edi, edi`` on x86) is such an instruction;
- x86/x64: no branch inside the function back into the bytes that get replaced;
- padding before the function, as ``/FUNCTIONPADMIN`` lays it out: at least
  :data:`REQUIRED_PADDING` bytes of int3/nop (x86 5: the classic ``jmp rel32`` of
  ``mov edi, edi`` hot-patching; x64 6, what MSVC uses and lld's
  ``/hotpatchcompatible`` demands; ARM64 8: two instructions, the ``/functionpadmin:8``
  the ARM64 toolchains need);
- the image marked HOTPATCH_COMPATIBLE in its extended DLL characteristics.

ARM64 instructions are all four bytes and cannot be jumped into halfway, so only the
padding and the image flag apply there.
"""

from __future__ import annotations

from collections.abc import Iterator

from pehotpatch.image.machine import Machine
from pehotpatch.image.symbols import Function, SymbolIndex
from pehotpatch.rules import ERROR, WARNING, Finding, checker, define, finding, hx
from pehotpatch.rules.context import Context
from pehotpatch.vocab import Side

REQUIRED_PADDING = {Machine.X86: 5, Machine.X64: 6, Machine.ARM64: 8}
X86_PAD_BYTES = frozenset((0xCC, 0x90))
ARM64_PAD_WORDS = frozenset((0x00000000, 0xD503201F, 0xD43E0000))  # udf #0, nop, brk #0xf000
MOV_EDI_EDI = (b"\x8b\xff", b"\x89\xff")

define(
    "HP701", "FirstInstructionTooShort", "first instruction of a redirected base function is too short",
    ERROR,
    """The base function that the patch redirects starts with a one-byte instruction
    (x86/x64). The engine replaces the first instruction with a jump; covering more
    than one instruction is not atomic, since a thread may be stopped between them.
    Build the base with /hotpatch (clang: -fms-hotpatch), which starts every function
    with a two-byte instruction. A base already deployed cannot be fixed: the function
    cannot be hot-patched.""",
)
define(
    "HP702", "EntryIsBranchTarget", "entry of a redirected base function is a branch target", ERROR,
    """A branch inside the base function jumps back into the bytes at its entry that
    the engine replaces (x86/x64). A thread taking that branch would execute the
    replacement jump, or land in the middle of it. /hotpatch prevents this by putting
    a no-op at the entry that nothing branches to.""",
)
define(
    "HP703", "PaddingTooSmall", "too little padding before a redirected base function", ERROR,
    """The base function that the patch redirects has fewer padding bytes (int3/nop, on
    ARM64 udf/nop/brk words) before it than the hot-patch jump sequence needs: 5 on
    x86 (the classic mov edi,edi form), 6 on x64, 8 on ARM64. Link the base with
    /FUNCTIONPADMIN (lld-link: /functionpadmin:N, objects compiled with /Gy and
    /hotpatch).""",
)
define(
    "HP704", "BaseNotHotpatchCompatible", "base image lacks HOTPATCH_COMPATIBLE", WARNING,
    """The base image is not marked HOTPATCH_COMPATIBLE (0x80) in its extended DLL
    characteristics debug entry. Windows may refuse to hot-patch an image that does not
    declare it was built for it. Link with /hotpatchcompatible (lld-link), which also
    requires function padding.""",
)


def padding_before(ix: SymbolIndex, fn: Function) -> int:
    """Bytes of padding immediately before ``fn`` (bounded by the previous function and
    the section start)."""
    img = ix.image
    sec = img.section_at(fn.rva)
    if sec is None:
        return 0
    limit = sec.rva
    prev = ix.function_at(fn.rva - 1) if fn.rva > sec.rva else None
    if prev is not None and prev.rva != fn.rva and ({"pdb", "pdata", "coff"} & prev.sources):
        limit = max(limit, min(prev.end, fn.rva))
    span = fn.rva - limit
    if span <= 0:
        return 0
    raw = img.try_read(limit, span)
    if raw is None:
        return 0
    n = 0
    if img.machine is Machine.ARM64:
        i = len(raw) - 4
        while i >= 0 and int.from_bytes(raw[i : i + 4], "little") in ARM64_PAD_WORDS:
            n += 4
            i -= 4
        return n
    i = len(raw) - 1
    while i >= 0 and raw[i] in X86_PAD_BYTES:
        n += 1
        i -= 1
    return n


@checker("HP7xx", emits=("HP701", "HP702", "HP703", "HP704"))
def check_prologue(ctx: Context) -> Iterator[Finding]:
    base = ctx.base.pe
    m = base.machine
    need = REQUIRED_PADDING.get(m, 6)
    for fd in ctx.patched:
        fb = fd.base
        name = fd.new.name
        cb = ctx.code(Side.BASE, fb.rva)
        head = base.try_read(fb.rva, 8) or b""
        ev_common = {"base_rva": hx(fb.rva), "entry_bytes": head.hex()}
        classic = m is Machine.X86 and head[:2] in MOV_EDI_EDI
        if m in (Machine.X86, Machine.X64) and cb is not None:
            if not cb.hotpatch_nop and cb.first_insn_size < 2:
                yield finding(
                    "HP701", f"{name}: the base function's first instruction is {cb.first_insn_size} byte",
                    symbol=name, kind="function",
                    evidence={**ev_common, "first_instruction_size": cb.first_insn_size},
                    explanation=[f"{name} is patched, so the base's {fb.name} is redirected at its entry",
                                 f"its first instruction ({head[: cb.first_insn_size].hex()}) is "
                                 f"{cb.first_insn_size} byte; a redirect needs at least 2",
                                 "the base was built without /hotpatch (clang -fms-hotpatch)"],
                )
            if cb.entry_is_branch_target:
                yield finding(
                    "HP702", f"{name}: a branch in the base function targets its entry", symbol=name,
                    kind="function", evidence=ev_common,
                    explanation=[f"{name} is patched, so the base's {fb.name} is redirected at its entry",
                                 "a jump inside it lands in the bytes the redirect replaces"],
                )
        pad = padding_before(ctx.bix, fb)
        if pad < need:
            expl = [f"{name} is patched, so the base's {fb.name} is redirected at its entry",
                    f"only {pad} byte{'s' if pad != 1 else ''} of padding precede it; {m.value} needs {need}"]
            if m is Machine.X86 and classic:
                expl.append("its entry is mov edi,edi, but the classic form also needs 5 bytes of padding")
            yield finding(
                "HP703", f"{name}: {pad} bytes of padding before the base function, {need} needed",
                symbol=name, kind="function",
                evidence={**ev_common, "padding": pad, "required": need},
                explanation=expl,
            )
    if not base.hotpatch_compatible:
        how = ("has no extended DLL characteristics entry" if base.ex_dll_characteristics is None
               else f"extended DLL characteristics are {base.ex_dll_characteristics:#x}")
        yield finding(
            "HP704", "the base image is not marked HOTPATCH_COMPATIBLE", kind="image",
            evidence={"ex_dll_characteristics": hx(base.ex_dll_characteristics)},
            explanation=[f"the base image {how} (HOTPATCH_COMPATIBLE is 0x80)",
                         "link with /hotpatchcompatible"],
        )
