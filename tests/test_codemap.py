"""Normalised summaries and the functions found as call targets, on small indexes built by
hand over a real image (samples/x64/fix_globals), so what must be found is known."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

import pehotpatch as pehp
from pehotpatch.codemap import (
    KIND_CODES,
    KIND_NAMES,
    FuncCode,
    build_codemaps,
    discover_call_targets,
    function_bytes,
)
from pehotpatch.disasm import normalize
from pehotpatch.image.symbols import Function, SymbolIndex
from pehotpatch.vocab import RefKind

SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "x64" / "fix_globals"
CALL = KIND_CODES[RefKind.CALL]


@pytest.fixture(scope="module")
def full() -> SymbolIndex:
    return pehp.load_image(SAMPLE / "base.dll").index


def by_name(ix: SymbolIndex, name: str) -> Function:
    return ix.functions_by_name[name]


def without(ix: SymbolIndex, *names: str) -> SymbolIndex:
    return SymbolIndex(ix.image, [replace(f) for f in ix.functions if f.name not in names], list(ix.globals),
                       ix.has_pdb)


def caller_code(f: Function, *targets: int) -> FuncCode:
    return FuncCode(f.rva, b"\0" * 16, tuple((4 * i, CALL, t) for i, t in enumerate(targets)), 3, 2, b"", False)


def test_a_called_function_missing_from_the_index_is_found(full):
    caller, lost, after = by_name(full, "telemetry_init"), by_name(full, "ring_reset"), by_name(full, "now_counter")
    small = without(full, "ring_reset")
    code = {caller.rva: caller_code(caller, lost.rva)}
    names_before = [(f.name, f.rva, f.size) for f in small.functions]

    bigger, extra = discover_call_targets(small, code)

    # the index given is not changed, the one returned holds the new function
    assert [(f.name, f.rva, f.size) for f in small.functions] == names_before
    assert small.function_at(lost.rva) is None
    assert bigger is not small
    found = bigger.function_at(lost.rva)
    assert found is not None and found.name == f"sub_{lost.rva:x}" and found.sources == {"call-target"}
    # it runs up to the next known function, less the int3 padding before that one
    assert found.rva == lost.rva and found.end == lost.end < after.rva
    assert set(small.image.read(found.end, after.rva - found.end)) == {0xCC}
    assert len(bigger.functions) == len(small.functions) + 1
    assert [f.rva for f in bigger.functions] == sorted(f.rva for f in bigger.functions)
    # its code is already normalised, from the image's bytes over that extent
    assert set(extra) == {lost.rva}
    img = small.image
    nc = normalize(img.machine, img.read(lost.rva, found.size), lost.rva, image_base=img.image_base,
                   relocs=img.relocations.within(lost.rva, found.end))
    assert extra[lost.rva].rva == lost.rva
    assert extra[lost.rva].n_insns == len(nc.insn_offsets)
    assert [(o, KIND_NAMES[k], t) for o, k, t in extra[lost.rva].refs] == [(r.offset, r.kind, r.target) for r in nc.refs]


def _covering(full: SymbolIndex, sources: set[str]) -> tuple[SymbolIndex, Function, Function]:
    """``full`` without ring_reset, whose extent the function before it takes over."""
    lost = by_name(full, "ring_reset")
    before = max((f for f in full.functions if f.rva < lost.rva), key=lambda f: f.rva)
    funcs = [replace(f, size=lost.end - f.rva, sources=set(sources)) if f is before else replace(f)
             for f in full.functions if f is not lost]
    return SymbolIndex(full.image, funcs, list(full.globals), full.has_pdb), before, lost


def test_a_call_into_a_guessed_extent_starts_a_function(full):
    # One build's padding scan guessed an extent over a function that the other build
    # finds as a call target: the call splits the guess, so both builds agree.
    small, before, lost = _covering(full, {"padding"})
    caller = by_name(full, "telemetry_init")
    bigger, extra = discover_call_targets(small, {caller.rva: caller_code(caller, lost.rva)})
    head, found = bigger.function_at(before.rva), bigger.function_at(lost.rva)
    assert found is not None and found.rva == lost.rva and found.end == lost.end
    assert found.sources == {"call-target"}
    assert head is not None and head.rva == before.rva and head.end == before.end  # its padding trimmed
    assert set(extra) == {before.rva, lost.rva}  # both normalised again over their new extents
    assert extra[before.rva].n_insns < extra[lost.rva].n_insns + extra[before.rva].n_insns
    assert small.function_at(lost.rva).rva == before.rva  # the index given is not changed


def test_a_call_into_an_exact_extent_splits_nothing(full):
    small, before, lost = _covering(full, {"pdb"})
    caller = by_name(full, "telemetry_init")
    bigger, extra = discover_call_targets(small, {caller.rva: caller_code(caller, lost.rva)})
    assert bigger.function_at(lost.rva).rva == before.rva and extra == {}


def test_known_functions_data_and_other_references_find_nothing(full):
    caller, known = by_name(full, "telemetry_init"), by_name(full, "ring_reset")
    rdata = next(s for s in full.image.sections if s.name == ".rdata")
    code = {caller.rva: caller_code(caller, known.rva, known.rva + 3, rdata.rva + 8, 0x7FFF0000)}
    # a data reference to an unknown place in code is not a call
    code[known.rva] = FuncCode(known.rva, b"\1" * 16, ((0, KIND_CODES[RefKind.DATA], by_name(full, "now_ticks").rva + 1),),
                               2, 2, b"", False)
    same, extra = discover_call_targets(full, code)
    assert same is full and extra == {}


def test_two_unknown_targets_in_a_row_split_the_gap(full):
    caller = by_name(full, "telemetry_init")
    first, second, after = by_name(full, "ring_reset"), by_name(full, "now_counter"), by_name(full, "telemetry_record")
    small = without(full, "ring_reset", "now_counter")
    bigger, extra = discover_call_targets(small, {caller.rva: caller_code(caller, second.rva, first.rva)})
    a, b = bigger.function_at(first.rva), bigger.function_at(second.rva)
    assert a is not None and b is not None and a is not b
    # each runs up to the next start, less the int3 padding before it: the PDB's extents
    assert (a.rva, a.end) == (first.rva, first.end) and first.end < second.rva
    assert (b.rva, b.end) == (second.rva, second.end) and second.end < after.rva
    assert set(extra) == {first.rva, second.rva}


def test_the_last_function_of_the_code_section_ends_with_it(full):
    text = next(s for s in full.image.sections if s.name == ".text")
    last = full.functions[-1]
    caller = full.functions[0]
    small = without(full, last.name)
    bigger, _ = discover_call_targets(small, {caller.rva: caller_code(caller, last.rva)})
    found = bigger.function_at(last.rva)
    assert found is not None and found.end == text.rva + text.size


def test_function_bytes_stop_at_the_end_of_the_section(full):
    text = next(s for s in full.image.sections if s.name == ".text")
    last = full.functions[-1]
    huge = replace(last, size=1 << 30)
    assert function_bytes(full.image, huge) == full.image.read(last.rva, text.rva + text.size - last.rva)
    assert function_bytes(full.image, last) == full.image.read(last.rva, last.size)


def test_reusing_the_rebuilds_normalisation_gives_the_same_summaries():
    base = pehp.load_image(SAMPLE / "base.dll").index
    new = pehp.load_image(SAMPLE / "intermediate.dll").index
    together = build_codemaps([base, new], jobs=1)  # the base reuses the rebuild's templates
    alone = [build_codemaps([base], jobs=1)[0], build_codemaps([new], jobs=1)[0]]
    assert together == alone
    assert set(together[0]) == {f.rva for f in base.functions}
