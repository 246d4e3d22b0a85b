"""Pairing on small hand-made indexes: each kind of evidence on its own, in the order the
module documents (name, content hash, call graph, order), and what is left over.

The indexes hold a real image (for its header and sections) but functions, globals,
imports and normalised summaries written here, so every expected pair is known by
construction."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from pehotpatch.codemap import KIND_CODES, FuncCode
from pehotpatch.correlate import callsites, canonical_name, correlate, import_renames
from pehotpatch.image.pe import Import, PEImage, Relocations
from pehotpatch.image.pe_reader import load_pe
from pehotpatch.image.symbols import Function, Global, SymbolIndex
from pehotpatch.vocab import RefKind

SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "x64" / "no_change" / "base.dll"
CALL, DATA = KIND_CODES[RefKind.CALL], KIND_CODES[RefKind.DATA]


@pytest.fixture(scope="module")
def image() -> PEImage:
    # the tests write data of their own over .rdata: no directory may end their extents there
    return replace(load_pe(SAMPLE), imports=[], data_directories=[(0, 0)] * 16, debug_entries=[])


def fn(name: str, rva: int, size: int = 0x40, module: str | None = None) -> Function:
    return Function(name, rva, size, {"test"}, module=module)


def code(f: Function, digest: str, refs: tuple[tuple[int, int, int], ...] = ()) -> FuncCode:
    return FuncCode(f.rva, digest.encode().ljust(16, b"."), refs, 4, 2, b"", False)


def index(img: PEImage, functions: list[Function], globals_: list[Global] | None = None,
          imports: list[Import] | None = None) -> SymbolIndex:
    if imports is not None:
        img = replace(img, imports=imports)
    return SymbolIndex(img, sorted(functions, key=lambda f: f.rva), globals_ or [], has_pdb=False)


def pairs(corr) -> dict[str, tuple[str, str]]:
    """base name -> (new name, method)."""
    return {p.base.name: (p.new.name, p.method) for p in corr.functions}


def test_canonical_name_drops_compiler_suffixes():
    assert canonical_name("f.cold") == "f"
    assert canonical_name("f.llvm.123456") == "f"
    assert canonical_name("f.part.0.isra.1") == "f"
    assert canonical_name("f.cold_path") == "f.cold_path"
    assert canonical_name("cold") == "cold"


def test_same_names_pair_whatever_moved(image):
    b = [fn("alpha", 0x1000), fn("beta", 0x1100), fn("gone", 0x1200)]
    n = [fn("beta", 0x2000), fn("alpha.cold.1", 0x2100), fn("fresh", 0x2200)]
    corr = correlate(index(image, b), index(image, n), {}, {})
    assert pairs(corr) == {"alpha": ("alpha.cold.1", "name"), "beta": ("beta", "name")}
    assert corr.function_map == {0x1000: 0x2100, 0x1100: 0x2000}
    assert [f.name for f in corr.removed_functions] == ["gone"]
    assert [f.name for f in corr.added_functions] == ["fresh"]
    assert corr.methods() == {"name": 2}


def test_static_functions_of_the_same_name_pair_by_module(image):
    b = [fn("helper", 0x1000, module="a.obj"), fn("helper", 0x1100, module="b.obj")]
    n = [fn("helper", 0x2000, module="b.obj"), fn("helper", 0x2100, module="a.obj")]
    corr = correlate(index(image, b), index(image, n), {}, {})
    assert corr.function_map == {0x1000: 0x2100, 0x1100: 0x2000}
    assert {p.method for p in corr.functions} == {"name"}


def test_unnamed_functions_pair_by_unique_content(image):
    # Swapped in address order, so pairing by order would get both wrong.
    b = [fn("sub_1000", 0x1000), fn("sub_1100", 0x1100)]
    n = [fn("sub_2000", 0x2000), fn("sub_2100", 0x2100)]
    bc = {0x1000: code(b[0], "parse"), 0x1100: code(b[1], "print")}
    nc = {0x2000: code(n[0], "print"), 0x2100: code(n[1], "parse")}
    corr = correlate(index(image, b), index(image, n), bc, nc)
    assert pairs(corr) == {"sub_1000": ("sub_2100", "content-hash"), "sub_1100": ("sub_2000", "content-hash")}


def test_equal_content_twice_on_a_side_is_no_evidence(image):
    b = [fn("sub_1000", 0x1000), fn("sub_1100", 0x1100, size=0x400)]
    n = [fn("sub_2000", 0x2000, size=0x400), fn("sub_2100", 0x2100)]
    same = {0x1000: code(b[0], "twin"), 0x1100: code(b[1], "twin")}
    nsame = {0x2000: code(n[0], "twin"), 0x2100: code(n[1], "twin")}
    corr = correlate(index(image, b), index(image, n), same, nsame)
    assert corr.functions == []  # no anchors, and sizes 16x apart: order does not pair either
    assert len(corr.removed_functions) == len(corr.added_functions) == 2


def test_callees_pair_by_the_call_graph(image):
    # Two unnamed callees with the same body (no unique content) swap places in the new
    # build; the named caller calls them at the same positions on both sides.
    b = [fn("caller", 0x1000), fn("sub_1100", 0x1100), fn("sub_1200", 0x1200)]
    n = [fn("caller", 0x2000), fn("sub_2100", 0x2100), fn("sub_2200", 0x2200)]
    bc = {0x1000: code(b[0], "caller", ((4, CALL, 0x1100), (9, CALL, 0x1200))),
          0x1100: code(b[1], "twin"), 0x1200: code(b[2], "twin")}
    nc = {0x2000: code(n[0], "caller", ((4, CALL, 0x2200), (9, CALL, 0x2100))),
          0x2100: code(n[1], "twin"), 0x2200: code(n[2], "twin")}
    corr = correlate(index(image, b), index(image, n), bc, nc)
    assert pairs(corr) == {"caller": ("caller", "name"), "sub_1100": ("sub_2200", "call-graph"),
                           "sub_1200": ("sub_2100", "call-graph")}


def test_call_graph_needs_the_same_kind_of_reference(image):
    b = [fn("caller", 0x1000), fn("sub_1100", 0x1100), fn("sub_1200", 0x1200)]
    n = [fn("caller", 0x2000), fn("sub_2100", 0x2100), fn("sub_2200", 0x2200)]
    bc = {0x1000: code(b[0], "caller", ((4, CALL, 0x1100), (9, CALL, 0x1200))),
          0x1100: code(b[1], "twin"), 0x1200: code(b[2], "twin")}
    # The new caller takes the first callee's address instead of calling it: no vote.
    nc = {0x2000: code(n[0], "caller", ((4, DATA, 0x2200), (9, CALL, 0x2100))),
          0x2100: code(n[1], "twin"), 0x2200: code(n[2], "twin")}
    corr = correlate(index(image, b), index(image, n), bc, nc)
    assert pairs(corr)["sub_1200"] == ("sub_2100", "call-graph")
    # Once that pair is made, the twin left on each side is unique: the next round pairs
    # it by content.
    assert pairs(corr)["sub_1100"] == ("sub_2200", "content-hash")


def test_leftovers_between_paired_neighbours_pair_in_order(image):
    b = [fn("first", 0x1000), fn("sub_1100", 0x1100, 0x40), fn("sub_1200", 0x1200, 0x80),
         fn("last", 0x1300)]
    n = [fn("first", 0x2000), fn("sub_2100", 0x2100, 0x44), fn("sub_2200", 0x2200, 0x7c),
         fn("last", 0x2300)]
    bc = {f.rva: code(f, f"b{f.rva:x}") for f in b}
    nc = {f.rva: code(f, f"n{f.rva:x}") for f in n}  # every body changed
    corr = correlate(index(image, b), index(image, n), bc, nc)
    assert pairs(corr) == {"first": ("first", "name"), "sub_1100": ("sub_2100", "order"),
                           "sub_1200": ("sub_2200", "order"), "last": ("last", "name")}


def test_order_never_pairs_two_different_names(image):
    b = [fn("first", 0x1000), fn("old_name", 0x1100), fn("last", 0x1200)]
    n = [fn("first", 0x2000), fn("new_name", 0x2100), fn("last", 0x2200)]
    corr = correlate(index(image, b), index(image, n), {}, {})
    assert "old_name" not in pairs(corr)
    assert [f.name for f in corr.removed_functions] == ["old_name"]
    assert [f.name for f in corr.added_functions] == ["new_name"]


def test_unequal_runs_pair_along_similar_sizes(image):
    # Three functions became two: the one whose size has no match is left over.
    b = [fn("first", 0x1000), fn("sub_1100", 0x1100, 0x20), fn("sub_1200", 0x1200, 0x300),
         fn("sub_1600", 0x1600, 0x60), fn("last", 0x1800)]
    n = [fn("first", 0x2000), fn("sub_2100", 0x2100, 0x22), fn("sub_2200", 0x2200, 0x5e),
         fn("last", 0x2400)]
    corr = correlate(index(image, b), index(image, n), {}, {})
    assert pairs(corr)["sub_1100"] == ("sub_2100", "order")
    assert pairs(corr)["sub_1600"] == ("sub_2200", "order")
    assert [f.name for f in corr.removed_functions] == ["sub_1200"]


def calls(*targets: int, kind: int = CALL) -> tuple[tuple[int, int, int], ...]:
    return tuple((4 * i, kind, t) for i, t in enumerate(targets))


def test_look_alikes_that_swapped_places_pair_by_their_call_sites(image):
    # Two unnamed look-alikes swap places in the new build, and both changed, so neither
    # content nor order can tell them apart (order would pair them the wrong way round).
    # The named caller changed too (one call more: no call-graph vote), but it still
    # calls the first one after `log` and the second one after the next `log`.
    b = [fn("main", 0x1000), fn("log", 0x1100), fn("sub_1200", 0x1200), fn("sub_1300", 0x1300),
         fn("last", 0x1400)]
    n = [fn("main", 0x2000), fn("log", 0x2100), fn("sub_2200", 0x2200), fn("sub_2300", 0x2300),
         fn("last", 0x2400)]
    bc = {0x1000: code(b[0], "main1", calls(0x1100, 0x1200, 0x1100, 0x1300)),
          0x1200: code(b[2], "literal1"), 0x1300: code(b[3], "distance1")}
    nc = {0x2000: code(n[0], "main2", calls(0x2100, 0x2300, 0x2100, 0x2100, 0x2200)),
          0x2200: code(n[2], "distance2"), 0x2300: code(n[3], "literal2")}
    corr = correlate(index(image, b), index(image, n), bc, nc)
    assert pairs(corr)["sub_1200"] == ("sub_2300", "call-site")
    assert pairs(corr)["sub_1300"] == ("sub_2200", "call-site")


def test_call_sites_of_a_caller_paired_by_order_undo_a_wrong_order_pair(image):
    # The caller is unnamed and pairs only by order; its callees, look-alikes, swapped
    # places, so order first pairs them the wrong way round; the caller's call sites,
    # read once order has paired it, undo that.
    b = [fn("first", 0x1000), fn("sub_1100", 0x1100), fn("mid", 0x1200), fn("sub_1300", 0x1300),
         fn("sub_1340", 0x1340), fn("last", 0x1400)]
    n = [fn("first", 0x2000), fn("sub_2100", 0x2100), fn("mid", 0x2200), fn("sub_2300", 0x2300),
         fn("sub_2340", 0x2340), fn("last", 0x2400)]
    bc = {0x1100: code(b[1], "caller1", calls(0x1200, 0x1300, 0x1200, 0x1340)),
          0x1300: code(b[3], "lit1"), 0x1340: code(b[4], "dist1")}
    nc = {0x2100: code(n[1], "caller2", calls(0x2200, 0x2340, 0x2200, 0x2300)),
          0x2300: code(n[3], "dist2"), 0x2340: code(n[4], "lit2")}
    corr = correlate(index(image, b), index(image, n), bc, nc)
    assert pairs(corr)["sub_1100"] == ("sub_2100", "order")
    assert pairs(corr)["sub_1300"] == ("sub_2340", "call-site")
    assert pairs(corr)["sub_1340"] == ("sub_2300", "call-site")


def test_call_sites_that_disagree_pair_nothing(image):
    # `main` calls the two look-alikes in one order, `aux` in the other: no unanimous
    # vote, so neither is paired by its call sites (order, which sees their swapped
    # callers as no contradiction, is then left to decide).
    b = [fn("main", 0x1000), fn("aux", 0x1080), fn("log", 0x1100), fn("sub_1200", 0x1200),
         fn("sub_1300", 0x1300, 0x100)]
    n = [fn("main", 0x2000), fn("aux", 0x2080), fn("log", 0x2100), fn("sub_2200", 0x2200),
         fn("sub_2300", 0x2300, 0x100)]
    bc = {0x1000: code(b[0], "m1", calls(0x1100, 0x1200, 0x1100, 0x1300)),
          0x1080: code(b[1], "a1", calls(0x1100, 0x1200, 0x1100, 0x1300)),
          0x1200: code(b[3], "x1"), 0x1300: code(b[4], "y1")}
    nc = {0x2000: code(n[0], "m2", calls(0x2100, 0x2300, 0x2100, 0x2100, 0x2200)),
          0x2080: code(n[1], "a2", calls(0x2100, 0x2200, 0x2100, 0x2100, 0x2300)),
          0x2200: code(n[3], "x2"), 0x2300: code(n[4], "y2")}
    corr = correlate(index(image, b), index(image, n), bc, nc)
    assert "call-site" not in corr.methods()


def test_a_rename_at_the_same_call_site_is_not_paired(image):
    # The only caller, whose code changed (as Brotli's caller of the renamed
    # BrotliInitEncoderDictionary did), calls one unnamed function at the same place in
    # both builds, with the same shape, so the call graph votes for the pair; but the new
    # function is 3 times the size (a different function that took the old one's place):
    # no pair, by neither the vote nor order (which would pair them: one function between
    # the same two neighbours, within a factor of 4).
    b = [fn("main", 0x1000), fn("sub_1100", 0x1100, 0x40), fn("last", 0x1200)]
    n = [fn("main", 0x2000), fn("sub_2100", 0x2100, 0xc0), fn("last", 0x2200)]
    bc = {0x1000: code(b[0], "main", calls(0x1200, 0x1100)), 0x1100: code(b[1], "init")}
    nc = {0x2000: code(n[0], "main'", calls(0x2200, 0x2100)), 0x2100: code(n[1], "init_shared")}
    corr = correlate(index(image, b), index(image, n), bc, nc)
    assert "sub_1100" not in pairs(corr)
    assert [f.name for f in corr.removed_functions] == ["sub_1100"]
    assert [f.name for f in corr.added_functions] == ["sub_2100"]
    # Within a factor of two it is the same function whose code grew: paired.
    n2 = [fn("main", 0x2000), fn("sub_2100", 0x2100, 0x70), fn("last", 0x2200)]
    corr = correlate(index(image, b), index(image, n2), bc, nc)
    assert pairs(corr)["sub_1100"] == ("sub_2100", "call-graph")


def test_unchanged_code_pairs_what_it_references_however_much_that_changed(image):
    # The caller is the same code in both builds (cmark-gfm's create_autolink_extension,
    # registering its `postprocess` callback, which grew from 193 to 1,900 bytes): the
    # function it references at the same place is the same one, whatever its size.
    b = [fn("main", 0x1000), fn("sub_1100", 0x1100, 0x40), fn("last", 0x1200)]
    n = [fn("main", 0x2000), fn("sub_2100", 0x2100, 0x400), fn("last", 0x2200)]
    bc = {0x1000: code(b[0], "main", calls(0x1200, 0x1100, kind=DATA)), 0x1100: code(b[1], "cb")}
    nc = {0x2000: code(n[0], "main", calls(0x2200, 0x2100, kind=DATA)), 0x2100: code(n[1], "cb'")}
    corr = correlate(index(image, b), index(image, n), bc, nc)
    assert pairs(corr)["sub_1100"] == ("sub_2100", "call-graph")


def test_order_refuses_functions_called_by_different_functions(image):
    # One unnamed function between the same neighbours on both sides, of similar size,
    # but the base one is called by `alpha` and the new one by `beta` (and `alpha` no
    # longer calls anything unknown): order would pair them; the callers say no.
    b = [fn("alpha", 0x1000), fn("beta", 0x1080), fn("sub_1100", 0x1100), fn("last", 0x1200)]
    n = [fn("alpha", 0x2000), fn("beta", 0x2080), fn("sub_2100", 0x2100), fn("last", 0x2200)]
    bc = {0x1000: code(b[0], "a1", calls(0x1100)), 0x1080: code(b[1], "b1"), 0x1100: code(b[2], "s1")}
    nc = {0x2000: code(n[0], "a2"), 0x2080: code(n[1], "b2", calls(0x2100)), 0x2100: code(n[2], "s2")}
    corr = correlate(index(image, b), index(image, n), bc, nc)
    assert "sub_1100" not in pairs(corr)
    # The same layout with `alpha` calling it on both sides pairs (by its call site).
    nc[0x2000], nc[0x2080] = code(n[0], "a2", calls(0x2100)), code(n[1], "b2")
    corr = correlate(index(image, b), index(image, n), bc, nc)
    assert pairs(corr)["sub_1100"] == ("sub_2100", "call-site")


def test_order_refuses_functions_calling_disjoint_known_functions(image):
    b = [fn("first", 0x1000), fn("malloc_like", 0x1040), fn("free_like", 0x1080),
         fn("sub_1100", 0x1100), fn("last", 0x1200)]
    n = [fn("first", 0x2000), fn("malloc_like", 0x2040), fn("free_like", 0x2080),
         fn("sub_2100", 0x2100), fn("last", 0x2200)]
    bc = {0x1100: code(b[3], "create", calls(0x1040, 0x1040))}
    nc = {0x2100: code(n[3], "destroy", calls(0x2080))}
    corr = correlate(index(image, b), index(image, n), bc, nc)
    assert "sub_1100" not in pairs(corr)



def test_callers_that_disagree_evenly_pair_nothing_by_call_graph(image):
    # `p` calls the unnamed function where it called sub_1100 before, `q` calls another
    # one there (cmark-gfm's cmark_parser_finish, whose inlined helper's calls shifted
    # by one, against cmark_parser_free): one vote each is no evidence.
    b = [fn("k", 0x1000), fn("p", 0x1040), fn("q", 0x1080), fn("sub_1100", 0x1100)]
    n = [fn("k", 0x2000), fn("p", 0x2040), fn("q", 0x2080), fn("sub_2100", 0x2100), fn("sub_2200", 0x2200)]
    bc = {0x1040: code(b[1], "p", calls(0x1000, 0x1100)), 0x1080: code(b[2], "q", calls(0x1000, 0x1100))}
    nc = {0x2040: code(n[1], "p", calls(0x2000, 0x2100)), 0x2080: code(n[2], "q", calls(0x2000, 0x2200))}
    corr = correlate(index(image, b), index(image, n), bc, nc)
    assert "sub_1100" not in pairs(corr)
    # A third caller on the side of `p` makes a majority.
    b.append(fn("r", 0x1300))
    n.append(fn("r", 0x2300))
    bc[0x1300], nc[0x2300] = code(b[-1], "r", calls(0x1000, 0x1100)), code(n[-1], "r", calls(0x2000, 0x2100))
    corr = correlate(index(image, b), index(image, n), bc, nc)
    assert pairs(corr)["sub_1100"] == ("sub_2100", "call-graph")


def test_order_pairs_a_function_of_the_same_shape_that_its_caller_calls_elsewhere(image):
    # `big` calls sub_1100 between k1 and k2, and its counterpart between k2 and k3: the
    # call places say "not one function", which would veto the order pair; a function of
    # the same size and instruction count at the same place in the run is paired anyway.
    def layout(size: int) -> tuple[list[Function], list[Function]]:
        b = [fn("k1", 0x1000), fn("sub_1100", 0x1100), fn("k2", 0x1200), fn("k3", 0x1300), fn("big", 0x1400)]
        n = [fn("k1", 0x2000), fn("sub_2100", 0x2100, size), fn("k2", 0x2200), fn("k3", 0x2300), fn("big", 0x2400)]
        return b, n

    b, n = layout(0x40)
    bc = {0x1100: code(b[1], "s1"), 0x1400: code(b[4], "big1", calls(0x1000, 0x1100, 0x1200, 0x1300))}
    nc = {0x2100: code(n[1], "s2"), 0x2400: code(n[4], "big2", calls(0x2000, 0x2200, 0x2100, 0x2300))}
    corr = correlate(index(image, b), index(image, n), bc, nc)
    assert pairs(corr)["sub_1100"] == ("sub_2100", "order")
    b, n = layout(0x48)  # another size: the call places still veto
    nc[0x2100] = code(n[1], "s2")
    corr = correlate(index(image, b), index(image, n), bc, nc)
    assert "sub_1100" not in pairs(corr)


def test_unnamed_data_maps_by_unchanged_code_first(image):
    # `same` is unchanged and names the data at 0x5000 / 0x6000; two patched functions
    # read it through a __ref_-like slot at 0x6100 instead. Their votes outnumber the
    # unchanged one but only count for data no unchanged code names.
    b = [fn("same", 0x1000), fn("p1", 0x1100), fn("p2", 0x1200)]
    n = [fn("same", 0x2000), fn("p1", 0x2100), fn("p2", 0x2200)]
    bc = {0x1000: code(b[0], "same", ((4, DATA, 0x5000),)),
          0x1100: code(b[1], "p1", ((4, DATA, 0x5000), (9, DATA, 0x5100))),
          0x1200: code(b[2], "p2", ((4, DATA, 0x5000), (9, CALL, 0x1000)))}
    nc = {0x2000: code(n[0], "same", ((4, DATA, 0x6000),)),
          0x2100: code(n[1], "p1'", ((4, DATA, 0x6100), (9, DATA, 0x6200))),
          0x2200: code(n[2], "p2'", ((4, DATA, 0x6100), (9, CALL, 0x2000)))}
    corr = correlate(index(image, b), index(image, n), bc, nc)
    assert corr.data_map[0x5000] == 0x6000
    assert corr.data_map[0x5100] == 0x6200  # named by changed code only


def test_order_leaves_look_alikes_of_unequal_runs_unpaired(image):
    # Three instantiations of one template became five, all of about the same size: the
    # in-order alignment would pair the first two with the first two, a guess.
    b = [fn("first", 0x1000), *(fn(f"sub_{0x1100 + 0x1000 * i:x}", 0x1100 + 0x1000 * i, 0x900 + 0x10 * i)
                                for i in range(3)), fn("last", 0x9000)]
    n = [fn("first", 0x10000), *(fn(f"sub_{0x10100 + 0x1000 * i:x}", 0x10100 + 0x1000 * i, 0x980 - 0x20 * i)
                                 for i in range(5)), fn("last", 0x19000)]
    bc = {f.rva: code(f, f"b{f.rva:x}")._replace(n_insns=500) for f in b}
    nc = {f.rva: code(f, f"n{f.rva:x}")._replace(n_insns=560) for f in n}
    corr = correlate(index(image, b), index(image, n), bc, nc)
    assert pairs(corr) == {"first": ("first", "name"), "last": ("last", "name")}
    # Instruction counts within 4 % (a run shifted by an inserted function) still pair.
    nc = {f.rva: f._replace(n_insns=100) for f in nc.values()}
    bc = {f.rva: f._replace(n_insns=98) for f in bc.values()}
    corr = correlate(index(image, b), index(image, n), bc, nc)
    assert [m for _, (_, m) in pairs(corr).items()].count("order") == 3


def _with_table(img: PEImage, at: int, targets: list[int]) -> PEImage:
    """``img`` with a jump table at ``at`` in .rdata: 32-bit offsets from the table (as
    clang writes them on x64) to ``targets``."""
    data = bytearray(img.data)
    off = img.rva_to_offset(at)
    assert off is not None
    for i, t in enumerate(targets):
        data[off + 4 * i : off + 4 * i + 4] = (t - at).to_bytes(4, "little", signed=True)
    return replace(img, data=bytes(data))


def test_switch_cases_pair_the_functions_they_call(image):
    # `dispatch` switches over a type: case 0 calls one instantiation, case 1 another,
    # cases 2 and 3 share the default block.  The new build adds a third instantiation
    # (called from another block, outside the table) and lays the case blocks out the
    # other way round, so the call sequences do not align (two unpaired callees against
    # three) and order would pair by address: case k still calls the same function.
    rd = next(s for s in image.sections if s.name == ".rdata").rva
    bt, nt = rd + 0x100, rd + 0x180
    bimg = _with_table(image, bt, [0x1010, 0x1020, 0x1030, 0x1030])
    nimg = _with_table(image, nt, [0x2020, 0x2010, 0x2040, 0x2040])
    b = [fn("dispatch", 0x1000, 0x100), fn("sub_1200", 0x1200), fn("sub_1300", 0x1300),
         fn("last", 0x1400)]
    n = [fn("dispatch", 0x2000, 0x100), fn("sub_2200", 0x2200), fn("sub_2300", 0x2300),
         fn("sub_2380", 0x2380), fn("last", 0x2400)]
    bc = {0x1000: code(b[0], "dispatch1", ((2, DATA, bt), (0x14, CALL, 0x1200), (0x24, CALL, 0x1300))),
          0x1200: code(b[1], "h2"), 0x1300: code(b[2], "h3")}
    nc = {0x2000: code(n[0], "dispatch2", ((2, DATA, nt), (0x14, CALL, 0x2200), (0x24, CALL, 0x2300),
                                           (0x34, CALL, 0x2380))),
          0x2200: code(n[1], "h3x"), 0x2300: code(n[2], "h2x"), 0x2380: code(n[3], "d5")}
    corr = correlate(index(bimg, b), index(nimg, n), bc, nc)
    assert pairs(corr)["sub_1200"] == ("sub_2300", "call-site")
    assert pairs(corr)["sub_1300"] == ("sub_2200", "call-site")
    # Without the tables the same functions pair by address order, the wrong way round.
    corr = correlate(index(image, b), index(image, n), bc, nc)
    assert pairs(corr).get("sub_1200", ("", ""))[0] != "sub_2300"


def test_callees_whose_calls_interleave_give_no_vote(image):
    # Between the same two known calls the base calls A then B; the new build calls B,
    # A and B again: read from the start A would pair with B', from the end with A'.
    # No vote either way (and the sizes keep order from pairing them).
    b = [fn("main", 0x1000), fn("log", 0x1100), fn("sub_1200", 0x1200, 0x40),
         fn("sub_1300", 0x1300, 0x400)]
    n = [fn("main", 0x2000), fn("log", 0x2100), fn("sub_2200", 0x2200, 0x400),
         fn("sub_2300", 0x2300, 0x40)]
    bc = {0x1000: code(b[0], "m1", calls(0x1100, 0x1200, 0x1300, 0x1100)),
          0x1200: code(b[2], "a1"), 0x1300: code(b[3], "b1")}
    nc = {0x2000: code(n[0], "m2", calls(0x2100, 0x2200, 0x2300, 0x2200, 0x2100)),
          0x2200: code(n[2], "b2"), 0x2300: code(n[3], "a2")}
    corr = correlate(index(image, b), index(image, n), bc, nc)
    assert "call-site" not in corr.methods()
    # Called once each, in the same order, they pair.
    nc[0x2000] = code(n[0], "m2", calls(0x2100, 0x2300, 0x2200, 0x2100, 0x2100))
    corr = correlate(index(image, b), index(image, n), bc, nc)
    assert pairs(corr)["sub_1200"] == ("sub_2300", "call-site")
    assert pairs(corr)["sub_1300"] == ("sub_2200", "call-site")


def test_unnamed_data_maps_by_the_references_of_paired_code(image):
    b = [fn("reader", 0x1000)]
    n = [fn("reader", 0x2000)]
    bc = {0x1000: code(b[0], "reader", ((3, DATA, 0x5000), (8, DATA, 0x5010)))}
    nc = {0x2000: code(n[0], "reader", ((3, DATA, 0x6020), (8, DATA, 0x6000)))}
    corr = correlate(index(image, b), index(image, n), bc, nc)
    assert corr.data_map == {0x5000: 0x6020, 0x5010: 0x6000}


def _with_rdata(img: PEImage, words: dict[int, int], pointers: list[int]) -> PEImage:
    """``img`` with 8-byte ``words`` written into .rdata (RVA -> value) and base
    relocations at ``pointers`` (whose words become image_base + value)."""
    data = bytearray(img.data)
    for rva, v in words.items():
        off = img.rva_to_offset(rva)
        assert off is not None
        data[off : off + 8] = (v + (img.image_base if rva in pointers else 0)).to_bytes(8, "little")
    return replace(img, data=bytes(data), relocations=Relocations(sorted(pointers)))


def test_data_only_pointed_at_maps_by_the_pointers_of_mapped_data(image):
    # `reader` names a table at the same position in both builds (so the table maps);
    # the table holds a size and a pointer to an array that no code names, which moved.
    rd = next(s for s in image.sections if s.name == ".rdata").rva
    tb, ab, tn, an = rd + 0x100, rd + 0x200, rd + 0x140, rd + 0x280
    array = {8 * i: 0x41 + i for i in range(8)}  # 64 bytes, the most compared
    bimg = _with_rdata(image, {tb: 3, tb + 8: ab, **{ab + o: v for o, v in array.items()}}, [tb + 8])
    nimg = _with_rdata(image, {tn: 3, tn + 8: an, **{an + o: v for o, v in array.items()}}, [tn + 8])
    b, n = [fn("reader", 0x1000)], [fn("reader", 0x1000)]
    bc = {0x1000: code(b[0], "reader", ((3, DATA, tb),))}
    nc = {0x1000: code(n[0], "reader", ((3, DATA, tn),))}
    corr = correlate(index(bimg, b), index(nimg, n), bc, nc)
    assert corr.data_map == {tb: tn, ab: an}
    # An array whose content changed is not mapped: the table that points at it keeps
    # comparing as changed, as the content is compared nowhere else.
    nimg = _with_rdata(image, {tn: 3, tn + 8: an, **{an + o: v + (o == 56) for o, v in array.items()}}, [tn + 8])
    corr = correlate(index(bimg, b), index(nimg, n), bc, nc)
    assert corr.data_map == {tb: tn}
    # A second mapped table pointing to the same base array but to another new one:
    # the votes disagree, and the array is left unmapped.
    tb2, tn2, an2 = rd + 0x180, rd + 0x1c0, rd + 0x2c0
    bimg = _with_rdata(image, {tb: 3, tb + 8: ab, tb2: 3, tb2 + 8: ab}, [tb + 8, tb2 + 8])
    nimg = _with_rdata(image, {tn: 3, tn + 8: an, tn2: 3, tn2 + 8: an2}, [tn + 8, tn2 + 8])
    bc = {0x1000: code(b[0], "reader", ((3, DATA, tb), (9, DATA, tb2)))}
    nc = {0x1000: code(n[0], "reader", ((3, DATA, tn), (9, DATA, tn2)))}
    corr = correlate(index(bimg, b), index(nimg, n), bc, nc)
    assert corr.data_map == {tb: tn, tb2: tn2}


def test_globals_pair_by_name_and_module(image):
    def g(name: str, rva: int, module: str | None = None) -> Global:
        return Global(name, rva, 4, ".data", True, {"test"}, module=module)

    bg = [g("counter", 0x5000, "a.obj"), g("counter", 0x5004, "b.obj"), g("old", 0x5008),
          g("table.llvm.7", 0x500c)]
    ng = [g("counter", 0x6000, "b.obj"), g("counter", 0x6004, "a.obj"), g("table", 0x6008),
          g("new", 0x600c)]
    corr = correlate(index(image, [], bg), index(image, [], ng), {}, {})
    assert corr.global_map == {0x5000: 0x6004, 0x5004: 0x6000, 0x500c: 0x6008}
    assert [x.name for x in corr.removed_globals] == ["old"]
    assert [x.name for x in corr.added_globals] == ["new"]



def test_modules_compare_by_object_name_across_build_directories(image):
    # The PDB records each object's full path; the fix is built in another directory.
    b = [fn("helper", 0x1000, module="C:/src/base.build/a.obj"), fn("helper", 0x1100, module="C:/src/base.build/b.obj")]
    n = [fn("helper", 0x2000, module="D:\\fix\\B.obj"), fn("helper", 0x2100, module="D:\\fix\\a.obj")]
    bg = [Global("state", 0x5000, 4, ".data", True, {"test"}, module="C:/src/base.build/a.obj"),
          Global("state", 0x5004, 4, ".data", True, {"test"}, module="C:/src/base.build/b.obj")]
    ng = [Global("state", 0x6000, 4, ".data", True, {"test"}, module="D:\\fix\\b.obj"),
          Global("state", 0x6004, 4, ".data", True, {"test"}, module="D:\\fix\\a.obj")]
    corr = correlate(index(image, b, bg), index(image, n, ng), {}, {})
    assert corr.function_map == {0x1000: 0x2100, 0x1100: 0x2000}
    assert corr.global_map == {0x5000: 0x6004, 0x5004: 0x6000}


def test_function_level_statics_of_one_name_pair_by_the_functions_using_them(image):
    # re2c gives each scanner its own `static const unsigned char yybm[]`, all named
    # `yybm` in one object. The new build adds a scanner (and its table) before the
    # others, so address order would give each scanner its neighbour's table.
    def t(rva: int) -> Global:
        return Global("yybm", rva, 256, ".rdata", False, {"test"}, module="scanners.obj")

    b = [fn("scan_a", 0x1000, module="scanners.obj"), fn("scan_b", 0x1100, module="scanners.obj")]
    n = [fn("scan_new", 0x2000, module="scanners.obj"), fn("scan_a", 0x2100, module="scanners.obj"),
         fn("scan_b", 0x2200, module="scanners.obj")]
    bg, ng = [t(0x5000), t(0x5100)], [t(0x6000), t(0x6100), t(0x6200)]
    bc = {0x1000: code(b[0], "a", ((4, DATA, 0x5000 + 0x20),)),  # a displacement into the table
          0x1100: code(b[1], "b", ((4, DATA, 0x5100), (9, CALL, 0x1000)))}
    nc = {0x2000: code(n[0], "new", ((4, DATA, 0x6000),)),
          0x2100: code(n[1], "a", ((4, DATA, 0x6100 + 0x20),)),
          # scan_b changed: one reference more, but still one table of that name
          0x2200: code(n[2], "b2", ((4, DATA, 0x6200), (9, CALL, 0x2100), (14, CALL, 0x2000)))}
    corr = correlate(index(image, b, bg), index(image, n, ng), bc, nc)
    assert corr.global_map == {0x5000: 0x6100, 0x5100: 0x6200}
    assert [g.rva for g in corr.added_globals] == [0x6000]
    # Without a function that tells them apart, address order as before.
    corr = correlate(index(image, [], bg), index(image, [], ng), {}, {})
    assert corr.global_map == {0x5000: 0x6000, 0x5100: 0x6100}


def _imports(dll: str, names: list[str], at: int) -> list[Import]:
    return [Import(dll, nm, None, at + 8 * i) for i, nm in enumerate(names)]


def test_a_renamed_dll_maps_its_imports(image):
    base = index(image, [], imports=[*_imports("libfoo-0a1b.dll", ["a", "b", "c"], 0x3000),
                                     *_imports("kernel32.dll", ["Sleep"], 0x3100)])
    new = index(image, [], imports=[*_imports("libfoo-3d4e.dll", ["a", "b", "d"], 0x3000),
                                    *_imports("kernel32.dll", ["Sleep"], 0x3100)])
    assert import_renames(base, new) == {"libfoo-0a1b.dll!a": "libfoo-3d4e.dll!a",
                                         "libfoo-0a1b.dll!b": "libfoo-3d4e.dll!b",
                                         "libfoo-0a1b.dll!c": "libfoo-3d4e.dll!c"}


def test_dlls_sharing_too_little_are_not_renames(image):
    base = index(image, [], imports=_imports("old.dll", ["a", "b", "c"], 0x3000))
    new = index(image, [], imports=_imports("other.dll", ["a", "x", "y", "z"], 0x3000))
    assert import_renames(base, new) == {}


def test_content_hash_sees_imports_through_a_renamed_dll(image):
    # Two unnamed functions, equal bodies, each calling a different import; the DLL was
    # renamed, so only the import map tells which is which.
    bimp = _imports("libfoo-0a1b.dll", ["open", "close"], 0x3000)
    nimp = _imports("libfoo-3d4e.dll", ["open", "close"], 0x3000)
    b = [fn("sub_1000", 0x1000), fn("sub_1100", 0x1100, 0x400)]
    n = [fn("sub_2000", 0x2000, 0x400), fn("sub_2100", 0x2100)]
    bc = {0x1000: code(b[0], "wrap", ((2, CALL, 0x3000),)), 0x1100: code(b[1], "wrap", ((2, CALL, 0x3008),))}
    nc = {0x2000: code(n[0], "wrap", ((2, CALL, 0x3008),)), 0x2100: code(n[1], "wrap", ((2, CALL, 0x3000),))}
    corr = correlate(index(image, b, imports=bimp), index(image, n, imports=nimp), bc, nc)
    assert pairs(corr) == {"sub_1000": ("sub_2100", "content-hash"), "sub_1100": ("sub_2000", "content-hash")}
    assert corr.import_key("libfoo-0a1b.dll!open") == "libfoo-3d4e.dll!open"
    assert corr.import_key("kernel32.dll!Sleep") == "kernel32.dll!Sleep"


def test_the_indexes_given_are_not_changed(image):
    b = [fn("caller", 0x1000), fn("sub_1100", 0x1100)]
    n = [fn("caller", 0x2000), fn("sub_2100", 0x2100)]
    bix, nix = index(image, b), index(image, n)
    before = ([replace(f) for f in bix.functions], [replace(f) for f in nix.functions])
    correlate(bix, nix, {0x1000: code(b[0], "c", ((1, CALL, 0x1100),)), 0x1100: code(b[1], "x")},
              {0x2000: code(n[0], "c", ((1, CALL, 0x2100),)), 0x2100: code(n[1], "y")})
    assert (bix.functions, nix.functions) == before


def test_call_graph_votes_need_the_paired_positions_to_agree(image):
    """A caller marked for hot patching loads a global's ``__ref_`` slot first where the
    base read the global last: as many references, shifted by one.  Read position by
    position, each unpaired callee would pair with its neighbour's counterpart; the
    known callee at a different position says the lists do not line up, and the call
    sites (aligned on that known callee) pair them instead."""
    b = [fn("caller", 0x1000), fn("known", 0x1100), fn("sub_1200", 0x1200), fn("sub_1300", 0x1300)]
    n = [fn("caller", 0x2000), fn("known", 0x2100), fn("sub_2200", 0x2200), fn("sub_2300", 0x2300)]
    bc = {0x1000: code(b[0], "caller", ((4, CALL, 0x1100), (9, CALL, 0x1200), (14, CALL, 0x1300), (19, DATA, 0x5000))),
          0x1100: code(b[1], "known"), 0x1200: code(b[2], "b1200"), 0x1300: code(b[3], "b1300")}
    nc = {0x2000: code(n[0], "caller2", ((4, DATA, 0x6000), (11, CALL, 0x2100), (16, CALL, 0x2200),
                                         (21, CALL, 0x2300))),
          0x2100: code(n[1], "known"), 0x2200: code(n[2], "n2200"), 0x2300: code(n[3], "n2300")}
    corr = correlate(index(image, b), index(image, n), bc, nc)
    assert pairs(corr)["sub_1200"] == ("sub_2200", "call-site")
    assert pairs(corr)["sub_1300"] == ("sub_2300", "call-site")


def test_call_site_gap_with_a_call_lost_or_gained_gives_no_vote():
    """The base called an unpaired function where the new build calls a known one (a
    removed callee replaced by its look-alike), and the new build calls one more
    unpaired function later in the same gap: counted k-th with k-th, each would pair
    with the wrong one.  A gap holding a known call outside the alignment says nothing."""
    a, other = ("k", CALL, "f", 0x2100), ("k", CALL, "f", 0x2800)
    bt = [a, ("u", CALL, 0x1200), ("u", CALL, 0x1300)]
    nt = [a, other, ("u", CALL, 0x2300), ("u", CALL, 0x2400)]
    assert callsites.votes(bt, nt) == []
    # without the known call in between, the same gap votes one to one
    assert callsites.votes(bt, [a, ("u", CALL, 0x2300), ("u", CALL, 0x2400)]) == [
        (0x1200, 0x2300, False), (0x1300, 0x2400, False)]


def test_call_sites_of_a_reordered_caller_give_no_vote():
    """The caller calls the same known functions in another order: the alignment keeps
    some and leaves others out, and the gaps it makes hold unrelated callees."""
    a, b, c = (("k", CALL, "f", r) for r in (0x2100, 0x2200, 0x2300))
    bt = [("u", CALL, 0x1500), a, b, ("u", CALL, 0x1600), c]
    nt = [b, ("u", CALL, 0x2500), c, a, ("u", CALL, 0x2600)]
    assert callsites.votes(bt, nt) == []


def test_call_graph_majority_holds_both_ways(image):
    """An unchanged switch whose removed case now calls another case's function: both
    base functions vote for that one new function, once each; neither is its answer."""
    b = [fn("disp", 0x1000), fn("sub_1100", 0x1100), fn("sub_1200", 0x1200)]
    n = [fn("disp", 0x2000), fn("sub_2100", 0x2100)]
    bc = {0x1000: code(b[0], "disp", ((4, CALL, 0x1200), (9, CALL, 0x1100))),
          0x1100: code(b[1], "removed"), 0x1200: code(b[2], "kept")}
    nc = {0x2000: code(n[0], "disp", ((4, CALL, 0x2100), (9, CALL, 0x2100))),
          0x2100: code(n[1], "kept, changed")}
    corr = correlate(index(image, b), index(image, n), bc, nc)
    # (address order may still guess here; the call graph no longer claims to know)
    assert pairs(corr).get("sub_1100", ("", ""))[1] != "call-graph"
    assert pairs(corr).get("sub_1200", ("", ""))[1] != "call-graph"
    assert callsites.majority({(1, 10): 1, (2, 10): 1}, strict=True, mutual=True) == []
    assert callsites.majority({(1, 10): 2, (2, 10): 1}, strict=True, mutual=True) == [(1, 10)]


def test_order_refuses_a_function_called_only_from_elsewhere(image):
    """Between two paired neighbours, a base function called by a paired caller (which
    no longer calls it) and a new function called only by new code are not one."""
    b = [fn("first", 0x1000), fn("sub_1100", 0x1100), fn("last", 0x1200), fn("caller", 0x1300)]
    n = [fn("first", 0x2000), fn("sub_2100", 0x2100), fn("last", 0x2200), fn("caller", 0x2300),
         fn("sub_2400", 0x2400)]
    bc = {0x1300: code(b[3], "caller", ((4, CALL, 0x1100),)), 0x1100: code(b[1], "b1100")}
    nc = {0x2300: code(n[3], "caller2"), 0x2400: code(n[4], "n2400", ((4, CALL, 0x2100),)),
          0x2100: code(n[1], "n2100")}
    corr = correlate(index(image, b), index(image, n), bc, nc)
    assert "sub_1100" not in pairs(corr)
    # the same without the new caller: nothing speaks against the order pair
    del nc[0x2400]
    corr = correlate(index(image, b), index(image, n[:4]), bc, nc)
    assert pairs(corr)["sub_1100"] == ("sub_2100", "order")


def test_order_refuses_a_function_that_calls_nothing_for_one_that_calls_known_code(image):
    """Between two paired neighbours, a base function that calls a paired function and
    a new one that calls no function at all (a removed function beside an added leaf)."""
    b = [fn("first", 0x1000), fn("sub_1100", 0x1100), fn("last", 0x1200), fn("helper", 0x1500)]
    n = [fn("first", 0x2000), fn("sub_2100", 0x2100), fn("last", 0x2200), fn("helper", 0x2500)]
    bc = {0x1100: code(b[1], "b1100", ((4, CALL, 0x1500),)), 0x1500: code(b[3], "helper")}
    nc = {0x2100: code(n[1], "n2100"), 0x2500: code(n[3], "helper")}
    corr = correlate(index(image, b), index(image, n), bc, nc)
    assert "sub_1100" not in pairs(corr)
    # calling the helper on both sides, they pair by order
    nc[0x2100] = code(n[1], "n2100", ((4, CALL, 0x2500),))
    corr = correlate(index(image, b), index(image, n), bc, nc)
    assert pairs(corr)["sub_1100"] == ("sub_2100", "order")


def _thunk(f: Function, slot: int) -> FuncCode:
    """An import thunk: one `jmp [rip+slot]`."""
    return FuncCode(f.rva, b"thunk".ljust(16, b"."), ((2, KIND_CODES[RefKind.INDIRECT_JUMP], slot),), 1, 6, b"",
                    False)


@pytest.mark.parametrize("same_import", [True, False])
def test_import_thunks_of_different_imports_never_pair(image, same_import):
    # zlib-ng 2.3.3 calls malloc where 2.2.5 called _aligned_malloc: the caller's call
    # graph votes for the two thunks, which jump through the slots of different imports.
    imp = _imports("ucrt.dll", ["_aligned_malloc", "malloc"], 0x3000)
    b = [fn("caller", 0x1000), fn("sub_1100", 0x1100, 6)]
    n = [fn("caller", 0x2000), fn("sub_2100", 0x2100, 6)]
    bc = {0x1000: code(b[0], "caller-old", ((4, CALL, 0x1100), (9, CALL, 0x1000))), 0x1100: _thunk(b[1], 0x3000)}
    nc = {0x2000: code(n[0], "caller-new", ((4, CALL, 0x2100), (9, CALL, 0x2000))),
          0x2100: _thunk(n[1], 0x3000 if same_import else 0x3008)}
    corr = correlate(index(image, b, imports=imp), index(image, n, imports=imp), bc, nc)
    got = pairs(corr)
    if same_import:
        assert got["sub_1100"][0] == "sub_2100"
    else:
        assert "sub_1100" not in got
        assert [f.name for f in corr.added_functions] == ["sub_2100"]
