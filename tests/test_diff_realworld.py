"""The differ on a real MSVC-built release pair without PDBs: numpy 2.5.4 vs 2.5.5
``_multiarray_umath`` (3.9 MB).  Spot checks were verified by hand with
``llvm-objdump-22 -d`` on both images (see the comments)."""

from __future__ import annotations

import pytest
from conftest import IN_CI

from pehotpatch.diff import CHANGED, diff_images
from pehotpatch.listing import listing
from pehotpatch.load import load_image

pytestmark = pytest.mark.network  # every test here reads images downloaded from the registry


def _diff_release_pair(pattern: str):
    """The diff of one image of the two numpy releases (downloaded on first use)."""
    import corpus

    try:
        paths = [corpus.numpy_image(v, pattern) for v in corpus.NUMPY_VERSIONS]
    except Exception as exc:
        if IN_CI:
            raise
        pytest.skip(f"cannot download numpy wheels: {exc}")
    return diff_images(load_image(paths[0]), load_image(paths[1]))


@pytest.fixture(scope="module")
def numpy_diff():
    return _diff_release_pair("_multiarray_umath*.pyd")


def test_pairing_covers_the_image(numpy_diff):
    res = numpy_diff
    methods = res.correlation.methods()
    paired = len(res.correlation.functions)
    assert res.base.pdb_path is None and any("no PDB" in n for n in res.base.notes)
    assert paired >= 11000
    assert methods["name"] >= 1  # the one export, PyInit__multiarray_umath
    assert methods["content-hash"] > paired // 2  # most functions are moved but identical
    assert methods["call-graph"] > 500
    # A patch release: far fewer than 2% of the functions really changed.
    assert len(res.changed_functions) < paired // 50
    assert res.unchanged > paired * 0.97


def test_spot_checks(numpy_diff):
    res = numpy_diff
    by_base = {p.base.rva: p for p in res.correlation.functions}
    status = {f.base.rva: f for f in res.functions}
    # PyInit__multiarray_umath: the export, paired by name (0x114160 -> 0x1142e0).
    p = by_base[0x114160]
    assert p.method == "name" and p.new.rva == 0x1142E0
    # 0xbe1e4 -> 0xbe274 (47 bytes, no symbol): objdump shows the same instructions;
    # only the jne target and the two RIP-relative IAT displacements moved.
    p = by_base[0xBE1E4]
    assert p.new.rva == 0xBE274 and 0xBE1E4 not in status
    # 0xbd590 -> 0xbd590: a real change; objdump shows the frame grew (sub rsp, 0x490 ->
    # 0x4a0) and r12/r13 swapped roles.
    fd = status[0xBD590]
    assert fd.status == CHANGED and fd.new.rva == 0xBD590


# ---- openblas: 20 MB built with mingw-w64; 7.5 MB of hand-written kernels have neither
# .pdata nor exports, so functions there are found from the call targets in the code.
@pytest.fixture(scope="module")
def openblas_diff():
    return _diff_release_pair("libscipy_openblas64_*.dll")


def test_openblas_code_without_unwind_data_is_split(openblas_diff):
    res = openblas_diff
    for ix in (res.base.index, res.new.index):
        discovered = [f for f in ix.functions if "call-scan" in f.sources]
        assert len(discovered) > 1000
        # The export before the kernels no longer covers 7.5 MB of them.
        assert max(f.size for f in ix.functions) < 1 << 20
    # scipy_dcabs164_ (base 0x29a160) is a small function of its own again.
    assert res.base.index.function_at(0x29A160).size < 0x1000


def test_openblas_spot_check(openblas_diff):
    res = openblas_diff
    by_base = {p.base.rva: p for p in res.correlation.functions}
    status = {f.base.rva: f for f in res.functions}
    # 0x137d70 -> 0x138200, a kernel without symbol (llvm-objdump names it
    # scipy_cblas_xerbla64_+0xd7d70): the stack frame grew, "movl $0x130f8, %eax" before
    # the stack probe call became "movl $0x131b8, %eax", and the frame offsets with it.
    p = by_base[0x137D70]
    assert p.new.rva == 0x138200 and "call-scan" in p.base.sources
    fd = status[0x137D70]
    assert fd.status == CHANGED


def test_renamed_import_dll_is_not_a_code_change():
    # numpy names its bundled OpenBLAS after a build hash, which changed between the
    # releases: _umath_linalg imports the same functions from a DLL with another name.
    # Its import thunks (jmp [IAT]) must compare as the same imports.
    res = _diff_release_pair("_umath_linalg*.pyd")
    (renamed,) = res.image.import_dlls_renamed
    assert renamed.base.startswith("libscipy_openblas64_-ed4f") and renamed.new.startswith("libscipy_openblas64_-4e39")
    assert res.image.import_dlls_added == [renamed.new]  # still reported as a new DLL
    assert res.changed_functions == []


def test_pdata_range_holding_only_a_jump_table(numpy_diff):
    # base 0xd2904 (56 bytes, its own .pdata entry) is a table of 14 RVAs of cases in
    # the code before it (llvm-objdump decodes it as "jge; or eax, 0xd209900; ...").
    # Shown as data, its entries compare by what they point to: unchanged although the
    # code moved (0xd2904 -> 0xd2990).
    res = numpy_diff
    p = {p.base.rva: p for p in res.correlation.functions}[0xD2904]
    assert p.new.rva == 0xD2990
    assert 0xD2904 not in {f.base.rva for f in res.functions}
    lines = listing(res.base.index, p.base)
    assert len(lines) == 14 and all(ln.startswith(".long ") for ln in lines)


def test_order_pairs_look_alike_runs_by_size():
    # msvc-runtime 14.42 -> 14.44 was rebuilt by a newer toolset: runs of unnamed
    # functions that all changed size cannot pair by content, only by their order
    # between paired neighbours.  vccorlib140 had 113 removed and 113 added functions
    # before runs of unequal length were aligned by size; the pairs are the same code
    # rebuilt.
    import corpus

    try:
        a, b = (corpus.msvc_runtime(v) / "vccorlib140.dll" for v in corpus.MSVC_RUNTIME_VERSIONS)
    except Exception as exc:
        if IN_CI:
            raise
        pytest.skip(f"cannot download msvc-runtime: {exc}")
    res = diff_images(load_image(a), load_image(b))
    assert len(res.removed_functions) < 60 and len(res.added_functions) < 60
    # base 0x65c0 -> 0x6780, 144 -> 150 bytes: llvm-objdump shows the same function
    # with "andq $0x0, 0x20(%rax)" become "movq $0x0, 0x20(%rax)" before the same call.
    p = {p.base.rva: p for p in res.correlation.functions}[0x65C0]
    assert p.new.rva == 0x6780 and p.method == "order"


def test_chunk_reading_a_table_through_the_parents_image_base(numpy_diff):
    # base 0x187316 -> 0x187286, a chunk: "mov rax, [rdi + r11*8 + 0x2ef750]" became
    # "... + 0x2ef800]" (llvm-objdump): rdi holds __ImageBase (loaded by the parent chunk)
    # and the displacement is the RVA of a table that moved with the data.
    res = numpy_diff
    p = {p.base.rva: p for p in res.correlation.functions}[0x187316]
    assert p.new.rva == 0x187286
    assert 0x187316 not in {f.base.rva for f in res.functions}
