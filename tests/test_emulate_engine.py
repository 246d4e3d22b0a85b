"""The emulator core on the real sample DLLs: mapping with relocations, calls through
exports on x64/x86/ARM64, faults and runaways as results, import stubs and refusals."""

from __future__ import annotations

from pathlib import Path

import pefile
import pytest
from conftest import SAMPLES

from pehotpatch.emulate.calls import parse_call, return_kind
from pehotpatch.emulate.engine import World
from pehotpatch.emulate.results import FAULT_BUDGET, FAULT_IMPORT, FAULT_READ, FAULT_WRITE
from pehotpatch.emulate.simulate import _call
from pehotpatch.emulate.space import IMAGE_SLOTS
from pehotpatch.errors import InputError, UsageError
from pehotpatch.image.pe_reader import load_pe

ARCHES = ["x64", "x86", "arm64"]


def world_with(dll: Path, budget: int = 2_000_000, pdb: Path | None = None):
    pe = load_pe(dll)
    w = World(pe.machine, budget=budget)
    im = w.load(pe, "base", 0, pdb=pdb)
    w.run_entry(im)
    return w, im


def call(w, im, text: str):
    return _call(w, im, parse_call(text))


@pytest.mark.parametrize("arch", ARCHES)
def test_relocated_image_runs(arch: str):
    """Mapped away from its preferred base, the image's absolute pointers (the handler
    table of telemetry_dispatch, x86 global addresses) are relocated: pefile's own
    relocation of the same image agrees at every relocated pointer."""
    dll = SAMPLES / arch / "body_fix" / "base.dll"
    w, im = world_with(dll)
    assert im.va == IMAGE_SLOTS[im.pe.machine][0] != im.pe.image_base
    ref = pefile.PE(str(dll))
    ref.relocate_image(im.va)
    mapped = ref.get_memory_mapped_image()
    sites = [e.rva for block in ref.DIRECTORY_ENTRY_BASERELOC for e in block.entries if e.type]
    assert len(sites) >= 8
    n = im.pe.machine.pointer_size
    for rva in sites:
        assert w.space.read(im.va + rva, n) == mapped[rva:rva + n], hex(rva)
    # handle_metric returns its argument times weight 1; handle_warn times 2
    assert call(w, im, "telemetry_dispatch(3, 40)").value == 40
    assert call(w, im, "telemetry_dispatch(1, 40)").value == 80


@pytest.mark.parametrize("arch", ARCHES)
def test_state_carries_between_calls(arch: str):
    w, im = world_with(SAMPLES / arch / "no_change" / "base.dll", pdb=SAMPLES / arch / "no_change" / "base.pdb")
    assert call(w, im, "telemetry_init()").value is None  # void, from the PDB signature
    for i in range(5):
        assert call(w, im, f"telemetry_record(0, {i})").value == 1
    assert call(w, im, "telemetry_count()").value == 5
    assert call(w, im, "config_set(0, 1)").value == 1
    assert call(w, im, "telemetry_peek_scaled(4)").value == 2  # 4 >> 1


@pytest.mark.parametrize("arch", ARCHES)
def test_null_read_is_a_fault_in_the_named_function(arch: str):
    d = SAMPLES / arch / "body_fix"
    w, im = world_with(d / "base.dll", pdb=d / "base.pdb")
    r = call(w, im, "telemetry_checksum(0, 16)")
    assert r.value is None and r.fault is not None
    assert r.fault.kind == FAULT_READ
    assert r.fault.pc.image == "base" and r.fault.pc.where.startswith("telemetry_checksum+")
    assert r.fault.address is not None and r.fault.address.where == "0x0"
    # the next call starts afresh
    assert call(w, im, "pehp_version()").value == call(w, im, "pehp_version()").value != 0


@pytest.mark.parametrize("arch", ARCHES)
def test_write_through_null_is_a_write_fault(arch: str):
    d = SAMPLES / arch / "fix_calls_unchanged"
    w, im = world_with(d / "base.dll", pdb=d / "base.pdb")
    call(w, im, "telemetry_record(0, 3)")
    r = call(w, im, "telemetry_flush(0, 0)")
    assert r.fault is not None and r.fault.kind == FAULT_WRITE
    assert r.fault.pc.where.startswith("ring_pop+")


@pytest.mark.parametrize("arch", ARCHES)
def test_runaway_call_stops_at_the_budget(arch: str):
    """telemetry_checksum over a huge length runs far longer than a small budget."""
    w, im = world_with(SAMPLES / arch / "no_change" / "base.dll", budget=5000)
    r = call(w, im, f"telemetry_checksum({im.va + 0x1000}, 0x100000)")
    assert r.fault is not None and r.fault.kind == FAULT_BUDGET
    assert "5000 instructions" in r.fault.detail
    assert call(w, im, "pehp_version()").fault is None


@pytest.mark.parametrize("arch", ARCHES)
def test_stubs_are_deterministic(arch: str):
    """telemetry_elapsed reads QueryPerformanceCounter twice (DllMain, then the call):
    the same in two fresh worlds, and it advances between calls."""
    d = SAMPLES / arch / "no_change" / "base.dll"
    w1, i1 = world_with(d)
    w2, i2 = world_with(d)
    a = [call(w1, i1, "telemetry_elapsed()").value for _ in range(3)]
    b = [call(w2, i2, "telemetry_elapsed()").value for _ in range(3)]
    assert a == b and a[0] < a[1] < a[2]


def test_unknown_import_is_refused_by_name(tmp_path: Path):
    """A real base whose GetTickCount import is renamed to one simulate has no stub for:
    the call that reaches it stops with a fault naming it; nothing crashes."""
    d = SAMPLES / "x64" / "fix_globals"
    data = (d / "base.dll").read_bytes()
    assert data.count(b"GetTickCount\0") == 1
    bad = tmp_path / "renamed.dll"
    bad.write_bytes(data.replace(b"GetTickCount\0", b"GetTickCounX\0"))
    w, im = world_with(bad)
    r = call(w, im, "telemetry_record(0, 1)")
    assert r.fault is not None and r.fault.kind == FAULT_IMPORT
    assert "kernel32.dll!GetTickCounX" in r.fault.detail and "no stub" in r.fault.detail
    assert call(w, im, "telemetry_count()").fault is None


def test_call_syntax():
    assert parse_call("f()").args == ()
    assert parse_call(" telemetry_record( 1 , 0x10 ) ").args == (1, 16)
    for bad in ("f", "f(1,)", "f(-1)", "f(a)", "f(1.5)", "(1)", "f(0x1ffffffff)"):
        with pytest.raises(UsageError):
            parse_call(bad, 32)
    assert return_kind("void telemetry_init(void)", "telemetry_init") == "void"
    assert return_kind("const char *telemetry_kind_name(unsigned int)", "telemetry_kind_name") == "wide"
    assert return_kind("unsigned int telemetry_count(void)", "telemetry_count") == "int"
    assert return_kind(None, "f") == "int"


def test_unknown_export_is_an_input_error():
    w, im = world_with(SAMPLES / "x64" / "no_change" / "base.dll")
    with pytest.raises(InputError, match="no export named 'nope'"):
        call(w, im, "nope()")
