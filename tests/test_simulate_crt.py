"""The C runtime stubs of the emulator (pehotpatch/emulate/crt.py): memory and string
functions and a deterministic heap, for images built against the Universal CRT.

A small DLL is built here with clang-cl-22 / lld-link-22, importing its C runtime
functions from vcruntime140.dll and the api-ms-win-crt API sets through import libraries
made by llvm-dlltool-22 (as tools/realcode.py builds real libraries), and its exports are
called in an emulated world.  The expected values are those the C standard defines."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from conftest import have_toolchain

from pehotpatch.emulate.crt import HEAP_BASE
from pehotpatch.emulate.engine import World
from pehotpatch.image.machine import Machine
from pehotpatch.image.pe_reader import load_pe

pytestmark = [pytest.mark.toolchain, pytest.mark.skipif(
    not have_toolchain() or shutil.which("llvm-dlltool-22") is None,
    reason="needs clang-cl-22, lld-link-22 and llvm-dlltool-22")]

SOURCE = r"""
typedef unsigned long long size_t;
void *malloc(size_t); void *calloc(size_t, size_t); void *realloc(void *, size_t); void free(void *);
void *_aligned_malloc(size_t, size_t); void _aligned_free(void *);
void *memcpy(void *, const void *, size_t); void *memmove(void *, const void *, size_t);
void *memset(void *, int, size_t); int memcmp(const void *, const void *, size_t);
void *memchr(const void *, int, size_t); size_t strlen(const char *); char *strchr(const char *, int);
int strcmp(const char *, const char *); int strncmp(const char *, const char *, size_t);
char *strstr(const char *, const char *);
#define API __declspec(dllexport)
API size_t t_dup(const char *s) { size_t n = strlen(s); char *p = malloc(n + 1); memcpy(p, s, n + 1); return (size_t)p; }
API size_t t_len(const char *s) { return strlen(s); }
API int t_cmp(const char *a, const char *b) { return strcmp(a, b); }
API int t_ncmp(const char *a, const char *b, size_t n) { return strncmp(a, b, n); }
API int t_memcmp(const void *a, const void *b, size_t n) { return memcmp(a, b, n); }
API size_t t_chr(const char *s, int c) { char *p = strchr(s, c); return p ? (size_t)(p - s) : 999; }
API size_t t_str(const char *h, const char *n) { char *p = strstr(h, n); return p ? (size_t)(p - h) : 999; }
API size_t t_memchr(const char *s, int c, size_t n) { char *p = memchr(s, c, n); return p ? (size_t)(p - s) : 999; }
API int t_fill(char *out, int c, size_t n) { memset(out, c, n); memmove(out + 1, out, n - 1); return out[n - 1]; }
API size_t t_grow(size_t n) {
    unsigned char *p = calloc(n, 1); size_t sum = 0, i;
    for (i = 0; i < n; i++) { sum += p[i]; p[i] = (unsigned char)i; }
    p = realloc(p, 2 * n);
    for (i = 0; i < n; i++) sum += p[i];
    free(p);
    return sum;
}
API size_t t_aligned(size_t a) { void *p = _aligned_malloc(100, a); size_t r = (size_t)p % a; _aligned_free(p); return r; }
API size_t t_malloc(size_t n) { return (size_t)malloc(n); }
API size_t t_copy_from(const char *src, size_t n) { char buf[8]; memcpy(buf, src, n); return buf[0]; }
int __stdcall DllMain(void *h, unsigned r, void *p) { return 1; }
"""
DEFS = {
    "vcruntime140": ["memcpy", "memmove", "memset", "memcmp", "memchr", "strchr", "strstr"],
    "api-ms-win-crt-heap-l1-1-0": ["malloc", "calloc", "realloc", "free", "_aligned_malloc", "_aligned_free"],
    "api-ms-win-crt-string-l1-1-0": ["strlen", "strcmp", "strncmp"],
}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    d = tmp_path_factory.mktemp("crt")
    (d / "t.c").write_text(SOURCE)
    libs = []
    for stem, names in DEFS.items():
        (d / f"{stem}.def").write_text(f"LIBRARY {stem}.dll\nEXPORTS\n" + "".join(f"  {n}\n" for n in names))
        subprocess.run(["llvm-dlltool-22", "-m", "i386:x86-64", "-d", f"{stem}.def", "-l", f"{stem}.lib"],
                       cwd=d, check=True, capture_output=True)
        libs.append(f"{stem}.lib")
    subprocess.run(["clang-cl-22", "--target=x86_64-pc-windows-msvc", "/nologo", "/c", "/O2", "/GS-", "/Zl",
                    "-fno-builtin", "t.c", "/Fot.obj"], cwd=d, check=True, capture_output=True)
    subprocess.run(["lld-link-22", "/nologo", "/dll", "/machine:x64", "/entry:DllMain", "/nodefaultlib",
                    "/noimplib", "/out:t.dll", "t.obj", *libs], cwd=d, check=True, capture_output=True)
    pe = load_pe(d / "t.dll")
    assert {i.name for i in pe.imports} >= {"malloc", "memcpy", "strlen"}
    w = World(Machine.X64)
    im = w.load(pe, "base", 0)
    yield w, im
    w.close()


def call(world, name, *args):
    w, im = world
    real = [w.space.alloc_buffer(a.encode() + b"\0") if isinstance(a, str) else a for a in args]
    r = w.call_va(w.export_va(im, name), real, wide=True)
    return r


def value(world, name, *args):
    r = call(world, name, *args)
    assert r.fault is None, r.fault.text()
    return r.value


def test_string_functions(world):
    assert value(world, "t_len", "hello, world") == 12
    assert value(world, "t_len", "") == 0
    assert value(world, "t_len", "x" * 5000) == 5000  # across pages
    assert value(world, "t_cmp", "abc", "abc") == 0
    assert value(world, "t_cmp", "abc", "abd") & 0xFFFFFFFF == 0xFFFFFFFF  # negative
    assert value(world, "t_cmp", "b", "abc") == 1
    assert value(world, "t_ncmp", "abcx", "abcy", 3) == 0
    assert value(world, "t_ncmp", "abcx", "abcy", 4) & 0xFFFFFFFF == 0xFFFFFFFF
    assert value(world, "t_chr", "hello", ord("l")) == 2
    assert value(world, "t_chr", "hello", 0) == 5  # the terminator is part of the string
    assert value(world, "t_chr", "hello", ord("z")) == 999
    assert value(world, "t_str", "the cat sat", "sat") == 8
    assert value(world, "t_str", "the cat sat", "dog") == 999
    assert value(world, "t_str", "abc", "") == 0


def test_memory_functions(world):
    assert value(world, "t_memcmp", "abcd", "abce", 3) == 0
    assert value(world, "t_memcmp", "abce", "abcd", 4) == 1
    assert value(world, "t_memchr", "abcdef", ord("d"), 6) == 3
    assert value(world, "t_memchr", "abcdef", ord("d"), 3) == 999
    w, im = world
    out = w.space.alloc_buffer(bytes(32))
    assert w.call_va(w.export_va(im, "t_fill"), [out, 0x41, 32]).value == 0x41
    assert w.space.read(out, 32) == b"A" * 32


def test_heap_is_deterministic_and_usable(world):
    first = value(world, "t_malloc", 10)
    assert first % 16 == 0 and HEAP_BASE[Machine.X64] <= first
    assert value(world, "t_malloc", 10) == first + 16  # bump allocation, 16-byte blocks
    p = value(world, "t_dup", "copy me")
    w, _ = world
    assert w.space.read(p, 8) == b"copy me\0"
    # calloc gives zeros, realloc keeps the contents: 0 + (0 + 1 + ... + 4999) mod 256 sums
    assert value(world, "t_grow", 5000) == sum(i & 0xFF for i in range(5000))
    for a in (16, 64, 4096):
        assert value(world, "t_aligned", a) == 0
    # more than a block may hold: NULL, as a real heap
    assert value(world, "t_malloc", 1 << 40) == 0


def test_a_bad_pointer_in_a_stub_is_a_fault(world):
    r = call(world, "t_len", 0x10)
    assert r.fault is not None and "cannot use" in r.fault.text()
    r = call(world, "t_copy_from", 0x10, 4)
    assert r.fault is not None
