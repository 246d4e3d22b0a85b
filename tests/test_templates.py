"""Reusing a function's normalisation for a moved copy in the other image
(pehotpatch/templates.py): the result must be exactly what normalising the copy gives."""

from __future__ import annotations

import pytest
from conftest import SAMPLES

from pehotpatch import codemap
from pehotpatch.codemap import _code_with_template, _summarise, _Templates, build_codemaps
from pehotpatch.disasm import normalize
from pehotpatch.image.machine import Machine
from pehotpatch.load import load_image
from pehotpatch.templates import derive, make_template

IB = 0x180000000
PAIRS = sorted(d for d in SAMPLES.glob("x*/*") if (d / "base.dll").exists())


def _derived_vs_normalised(base_ix, new_ix, limit=None):
    lib = _Templates(_code_with_template(new_ix.image, f) for f in new_ix.functions)
    funcs = base_ix.functions[:limit] if limit else base_ix.functions
    derived = 0
    for f in funcs:
        got = lib.code(base_ix.image, f)
        if got is None:
            continue
        derived += 1
        assert got == _summarise(f.rva, codemap.normalize_function(base_ix.image, f)), f.name
    return derived, len(funcs)


@pytest.mark.parametrize("d", PAIRS, ids=lambda d: f"{d.parent.name}/{d.name}")
def test_samples_reuse_gives_the_normalised_code(d):
    b, n = load_image(d / "base.dll"), load_image(d / "intermediate.dll")
    derived, total = _derived_vs_normalised(b.index, n.index)
    # Most functions of a hot-patch pair are moved copies (x86 ones with relocations).
    assert derived >= total * 0.6


def test_build_codemaps_is_the_same_with_and_without_reuse():
    d = SAMPLES / "x86" / "fix_globals"
    b, n = load_image(d / "base.dll"), load_image(d / "intermediate.dll")
    got = build_codemaps([b.index, n.index], jobs=1)
    plain = [{f.rva: _summarise(f.rva, codemap.normalize_function(ix.image, f)) for f in ix.functions}
             for ix in (b.index, n.index)]
    assert got == plain


def _tpl(code, rva):
    nc = normalize(Machine.X64, code, rva, image_base=IB)
    return make_template(Machine.X64, code, rva, IB, [], nc), _summarise(rva, nc)


def _rel32(v):
    return v.to_bytes(4, "little", signed=True)


def test_moved_call_gets_its_own_target():
    # push rbx; call rel32; lea rax, [rip + disp]; pop rbx; ret
    def fn(at, callee, data):
        code = b"\x53\xe8" + _rel32(callee - (at + 6)) + b"\x48\x8d\x05" + _rel32(data - (at + 13)) + b"\x5b\xc3"
        return code

    t, fc = _tpl(fn(0x2000, 0x5000, 0x9000), 0x2000)
    assert t is not None and [r[2] for r in fc.refs] == [0x5000, 0x9000]
    moved = fn(0x2400, 0x5100, 0x9040)
    refs = derive(t, moved, 0x2400, IB, [], Machine.X64, fc.refs)
    assert refs == tuple((o, k, tg) for (o, k, _), tg in zip(fc.refs, (0x5100, 0x9040), strict=True))
    assert refs == _summarise(0x2400, normalize(Machine.X64, moved, 0x2400, image_base=IB)).refs


def test_copy_whose_target_falls_inside_itself_is_not_reused():
    t, fc = _tpl(b"\x53\xe8" + _rel32(0x5000 - 0x2006) + b"\x5b\xc3", 0x2000)
    # Only the displacement differs, but this one lands inside the function (an internal
    # offset in the shape, not a reference), so the template does not apply.
    inside = b"\x53\xe8" + _rel32(-4) + b"\x5b\xc3"
    assert derive(t, inside, 0x2000, IB, [], Machine.X64, fc.refs) is None
    assert _summarise(0x2000, normalize(Machine.X64, inside, 0x2000, image_base=IB)).refs == ()


def test_other_bytes_outside_the_fields_are_not_reused():
    t, fc = _tpl(b"\x53\xe8" + _rel32(0x3000) + b"\x5b\xc3", 0x2000)
    assert derive(t, b"\x56\xe8" + _rel32(0x3000) + b"\x5e\xc3", 0x2000, IB, [], Machine.X64, fc.refs) is None


@pytest.mark.network
def test_realworld_numpy_reuse(request):
    import corpus

    try:
        paths = [corpus.numpy_image(v, "_multiarray_umath*.pyd") for v in corpus.NUMPY_VERSIONS]
    except Exception as exc:
        from conftest import IN_CI

        if IN_CI:
            raise
        pytest.skip(f"cannot download numpy wheels: {exc}")
    b, n = load_image(paths[0]), load_image(paths[1])
    derived, total = _derived_vs_normalised(b.index, n.index, limit=3000)
    assert derived >= total * 0.9


def test_bytes_between_fields_still_count():
    """The quick look at the bytes before the first and after the last field does not
    replace the full comparison: a difference between two fields refuses the template."""
    def fn(mid):  # call rel32; <mid>; lea rax, [rip + disp]; ret
        return b"\xe8" + _rel32(0x3000) + mid + b"\x48\x8d\x05" + _rel32(0x7000) + b"\xc3"

    t, fc = _tpl(fn(b"\x53"), 0x2000)
    assert t is not None and t.head == 1 and t.tail == len(fn(b"\x53")) - 1
    assert derive(t, fn(b"\x56"), 0x2000, IB, [], Machine.X64, fc.refs) is None
    assert derive(t, fn(b"\x53"), 0x2000, IB, [], Machine.X64, fc.refs) == fc.refs


def _count_decodings(monkeypatch):
    calls = [0]
    real_tpl, real_norm = codemap._code_with_template, codemap.normalize_function

    def tpl(img, f):
        calls[0] += 1
        return real_tpl(img, f)

    def norm(img, f):
        calls[0] += 1
        return real_norm(img, f)

    monkeypatch.setattr(codemap, "_code_with_template", tpl)
    monkeypatch.setattr(codemap, "normalize_function", norm)
    return calls


COPIES_C = r"""
static int g1, g2, g3, g4;
__declspec(noinline) static int h1(int x) { return x * 3 + 1; }
__declspec(noinline) static int h2(int x) { return x * 5 + 2; }
__declspec(noinline) static int h3(int x) { return x * 7 + 3; }
__declspec(noinline) static int h4(int x) { return x * 11 + 4; }
#define COPY(n) __declspec(dllexport) int f##n(int x) { g##n += x; if (x > 9) return h##n(x) ^ g##n; return g##n; }
COPY(1) COPY(2) COPY(3) COPY(4)
int __stdcall DllMain(void *h, unsigned r, void *p) { return 1; }
"""


@pytest.mark.toolchain
def test_copies_within_one_image_reuse(tmp_path, monkeypatch):
    """Functions instantiated from one macro differ only in the functions and data they
    address: within one image each reuses the normalisation of an earlier one of its size,
    and the result is what decoding gives."""
    import shutil
    import subprocess

    if shutil.which("clang-cl-22") is None or shutil.which("lld-link-22") is None:
        pytest.skip("needs clang-cl-22 / lld-link-22")
    (tmp_path / "c.c").write_text(COPIES_C)
    subprocess.run(["clang-cl-22", "--target=x86_64-pc-windows-msvc", "/nologo", "/c", "/O2", "/Z7", "/GS-",
                    "/Zl", "/Gy", "/hotpatch", "c.c", "/Foc.obj"], cwd=tmp_path, check=True, capture_output=True)
    subprocess.run(["lld-link-22", "/nologo", "/dll", "/machine:x64", "/entry:DllMain", "/nodefaultlib",
                    "/noimplib", "/debug", "/pdb:c.pdb", "/out:c.dll", "c.obj"], cwd=tmp_path, check=True,
                   capture_output=True)
    ix = load_image(tmp_path / "c.dll").index
    copies = [f for f in ix.functions if f.name in ("f1", "f2", "f3", "f4")]
    assert len(copies) == 4 and len({f.size for f in copies}) == 1
    calls = _count_decodings(monkeypatch)
    got = codemap._normalise_all(ix.image, ix.functions, lambda _n: True)
    decoded = calls[0]
    monkeypatch.undo()
    plain = [_summarise(f.rva, codemap.normalize_function(ix.image, f)) for f in ix.functions]
    assert [fc for fc, _ in got] == plain
    assert len({fc.digest for fc in plain if ix.function_at(fc.rva) in copies}) == 1
    assert decoded == len(ix.functions) - 3  # f2, f3, f4 reuse f1 (or an earlier copy)
