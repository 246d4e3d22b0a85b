"""A live patch of a running process under Wine: livepatch.exe (tests/wine/livepatch.c)
loads the base, starts a thread that runs the scenario's ``[run] calls`` in a loop, maps
the final image without running it, reads its Hotpatch Table with its own C reader, applies
it the way docs/FORMAT.md says the loader does, later undoes it, and prints what the thread
saw in each phase.  The expected results are not written here: they are the base's and the
intermediate's own results from runner.exe.

Purpose-broken tables (drop a backward record, leave a ``__ref_`` slot pointing into the
patch image, corrupt a record's first bytes, swap two FUNCTION targets) are made by editing
the table bytes of a real final image (tests/wine/tables.py); each is caught.
"""

from __future__ import annotations

import struct

import pefile
import pytest
from wine import harness, tables

pytestmark = pytest.mark.toolchain

PATCHABLE = [d for d in harness.patchable_x64() if harness.run_calls(d) is not None]
THREAD_EXIT = 7  # livepatch.c's calling thread returns 7 when asked to stop
ITERATIONS = 100


@pytest.fixture(scope="session")
def wine(tmp_path_factory):
    return harness.session(tmp_path_factory)


@pytest.fixture(scope="session")
def finals(tmp_path_factory):
    return harness.finals_dir(tmp_path_factory)


def _calls(wine, scenario):
    """The scenario's calls, typed; a result that changes from round to round is ignored."""
    typed = harness.typed(harness.run_calls(scenario), harness.return_types(scenario / "base.dll"))
    return harness.repeatable(wine, scenario, typed)


def _standalone(wine, dll, calls):
    run = harness.run_runner(wine, dll, calls)
    assert run.rc in (0, 1) and len(run.results) == len(calls), run.stdout
    return run.results


def _same(a, b) -> bool:
    return len(a) == len(b) and all(x.same(y) for x, y in zip(a, b, strict=True))


def _live(wine, scenario, final, calls, *, traps=None):
    if traps is None:
        forward_targets = {r.value for r in tables.read(final).records if r.kind == "func"}
        traps = harness.trap_rvas(scenario, forward_targets)
    return harness.run_live(wine, scenario / "base.dll", final, calls, traps=traps,
                            globals_=harness.shared_globals(scenario), iterations=ITERATIONS)


def _initial_value(final, rva, size):
    pe = pefile.PE(str(final), fast_load=True)
    data = pe.get_data(rva, size)
    pe.close()
    return int.from_bytes(data.ljust(size, b"\0"), "little")


@pytest.mark.parametrize("scenario", PATCHABLE, ids=lambda p: p.name)
def test_live_patch_switches_a_running_thread(wine, finals, scenario):
    calls = _calls(wine, scenario)
    final = harness.emit_final(scenario, finals)
    base_results = _standalone(wine, scenario / "base.dll", calls)
    fixed_results = _standalone(wine, scenario / "intermediate.dll", calls)
    live = _live(wine, scenario, final, calls)
    assert live.rc == 0 and live.done and not live.refused, live.stdout

    # the C reader of the table agrees with pehp's own decoder, record for record
    from pehotpatch import api

    reading = api.inspect_image(final)
    assert reading.valid
    theirs = [(("i" if c.inverse else "") + tables.TYPES[c.type], r.site, r.target, r.extra[0])
              for c in reading.table.chunks for r in c.records]
    assert live.records == theirs
    assert live.applied == len(theirs)

    # the thread never stopped: it ran clean iterations in every phase and exited when asked
    assert all(live.clean[p] >= ITERATIONS for p in (0, 1, 2)), live.stdout
    assert live.thread["exit"] == THREAD_EXIT and live.thread["dropped_vectors"] == 0
    assert live.thread["iterations"] >= sum(live.clean.values())
    # before: the base's results; patched: the intermediate's; after undo: the base's again
    assert _same(live.only_vector(0), base_results)
    assert _same(live.only_vector(1), fixed_results), live.stdout
    assert _same(live.only_vector(2), base_results)
    assert live.undo_identical is True
    # every stub page lies within 2 GiB of the image whose functions jump to it
    for image, va in live.hpat.items():
        start = live.base if image == "base" else live.patch
        assert abs(va - start) < 0x7FFF0000, (image, hex(va), hex(start))
    # state stays in the base: nothing wrote to the patch image's data, whose globals keep
    # their initial values from the file
    assert live.patch_data_changed == []
    for spec in harness.shared_globals(scenario):
        name, _, patch_rva, size = spec.split(":")
        assert live.globals[name][1] == _initial_value(final, int(patch_rva, 16), int(size)), name


def test_live_patch_globals_are_shared_both_ways(wine, finals):
    """fix_globals: the patched telemetry_record writes g_record_count in the base, which the
    unpatched telemetry_count reads; the unpatched config_set writes g_config.max_value in the
    base, and the patched telemetry_record clamps to it."""
    scenario = harness.SAMPLES / "x64" / "fix_globals"
    raw = harness.run_calls(scenario)
    calls = _calls(wine, scenario)
    final = harness.emit_final(scenario, finals)
    live = _live(wine, scenario, final, calls)
    patched = live.only_vector(1)
    counts = [i for i, c in enumerate(raw) if c == "telemetry_count()"]
    assert counts
    # the thread is held after a complete iteration: the base's g_record_count is what the
    # iteration's last telemetry_count() returned, the patch image's copy never moved
    assert live.globals["g_record_count"] == (patched[counts[-1]].value, 0)
    limit = raw.index("config_set(1, 1000)")
    record = raw.index("telemetry_record(3, 5000)")
    peek = raw.index("telemetry_peek_scaled(0)")
    assert limit < record < peek
    assert patched[peek].value == 1000  # not 5000 (unclamped) nor 100000 (the patch's own g_config)


def _broken(final, out, edit):
    t = tables.read(final)
    edit(t)
    out.write_bytes(t.encode())
    return out


# Calls added to a scenario's [run] calls so that the patched code reaches its unchanged
# callees: fix_calls_unchanged's [run] only flushes into NULL, which the fix returns from
# before calling ring_pop; a flush into a real buffer (`buf`) with an event pending calls it.
REACH_CALLEES = {"fix_calls_unchanged": ["telemetry_record(0, 11)", "telemetry_flush(buf, 1)"]}


@pytest.mark.parametrize("scenario", [d for d in PATCHABLE if d.name in ("fix_calls_unchanged", "fix_globals",
                                                                          "constants")],
                         ids=lambda p: p.name)
def test_dropped_backward_record_is_caught(wine, finals, tmp_path, scenario):
    """Without one of its INVERSE FUNCTION records, the patch image's copy of an unchanged
    callee runs: it is one of the trapped functions, and the thread faults on its int3 at
    exactly that record's site.  Each backward record is dropped in turn."""
    final = harness.emit_final(scenario, finals)
    backward = tables.read(final).find("ifunc")
    assert backward, "the scenario's patch calls no unchanged function"
    raw = harness.run_calls(scenario) + REACH_CALLEES.get(scenario.name, [])
    calls = harness.repeatable(wine, scenario, harness.typed(raw, harness.return_types(scenario / "base.dll")))
    intact = _live(wine, scenario, final, calls)
    assert intact.rc == 0 and _same(intact.only_vector(1), _standalone(wine, scenario / "intermediate.dll", calls))
    for dropped in backward:
        assert intact.traps[dropped.site] == "redirected"
        broken = _broken(final, tmp_path / f"final_{dropped.site:x}.dll",
                         lambda t, d=dropped: t.records.remove(t.find("ifunc", d.site)[0]))
        live = _live(wine, scenario, broken, calls)
        assert live.rc == 0 and live.done, live.stdout
        assert [r[1] for r in live.records if r[0] == "ifunc"] == [b.site for b in backward if b is not dropped]
        assert live.traps[dropped.site] == "planted"
        hits = {r.fault_addr - live.patch for _, vec in live.vectors[1] for r in vec if r.fault == 0x80000003}
        assert hits == {dropped.site}, live.stdout


def test_ref_slot_left_in_patch_image_is_caught(wine, finals, tmp_path):
    """Without the INVERSE ABSOLUTE record of __ref_g_record_count the slot keeps pointing at
    the patch image's own g_record_count: the patched code's increments land there (seen in
    the patch image's data) and the base's telemetry_count no longer sees them."""
    import pehotpatch

    scenario = harness.SAMPLES / "x64" / "fix_globals"
    final = harness.emit_final(scenario, finals)
    inter = pehotpatch.load_image(scenario / "intermediate.dll").index.globals_by_name
    slot = inter["__ref_g_record_count"].rva
    target = inter["g_record_count"].rva
    (record,) = tables.read(final).find("iabs", slot)
    broken = _broken(final, tmp_path / "final.dll", lambda t: t.records.remove(record))
    calls = _calls(wine, scenario)
    live = _live(wine, scenario, broken, calls)
    assert live.rc == 0 and live.done, live.stdout
    assert any(rva <= target < rva + n for rva, n in live.patch_data_changed), live.stdout
    fixed = _standalone(wine, scenario / "intermediate.dll", calls)
    assert not _same(live.only_vector(1), fixed)
    assert live.globals["g_record_count"][1] != 0  # the patch image's copy was written


@pytest.mark.parametrize("scenario", [d for d in PATCHABLE if (d / "hotpatch_functions.txt").read_text().split()],
                         ids=lambda p: p.name)
def test_corrupted_first_bytes_are_refused(wine, finals, tmp_path, scenario):
    """A FUNCTION record whose recorded first bytes do not match the base: the whole table
    is refused before anything is written, and the thread keeps running the base."""
    final = harness.emit_final(scenario, finals)
    forward = tables.read(final).find("func")
    assert forward

    def corrupt(t):
        t.find("func", forward[0].site)[0].words[2] ^= 0x0101

    broken = _broken(final, tmp_path / "final.dll", corrupt)
    calls = _calls(wine, scenario)
    live = _live(wine, scenario, broken, calls)
    assert live.rc == 3 and live.done, live.stdout
    assert live.refused == [f"first bytes func {forward[0].site:#x} recorded "
                            f"{(forward[0].words[2] ^ 0x0101) & 0xFFFF:#x} found {forward[0].words[2] & 0xFFFF:#x}"]
    assert live.applied is None and live.hpat == {} and 1 not in live.clean
    assert _same(live.only_vector(0), _standalone(wine, scenario / "base.dll", calls))


def test_swapped_function_targets_are_caught(wine, finals, tmp_path):
    """Two FUNCTION records with their patch targets swapped: each base function jumps into
    the other's fix, and the thread's results stop matching the intermediate's."""
    scenario = next((d for d in PATCHABLE if len(tables.read(harness.emit_final(d, finals)).find("func")) >= 2),
                    None)
    assert scenario is not None, "no patchable x64 sample patches two functions"
    final = harness.emit_final(scenario, finals)

    def swap(t):
        a, b = t.find("func")[:2]
        a.words[1], b.words[1] = b.words[1], a.words[1]

    broken = _broken(final, tmp_path / "final.dll", swap)
    calls = _calls(wine, scenario)
    live = _live(wine, scenario, broken, calls)
    assert live.done, live.stdout
    fixed = _standalone(wine, scenario / "intermediate.dll", calls)
    assert live.applied is not None
    assert live.vectors.get(1) and not any(_same(v, fixed) for _, v in live.vectors[1]), live.stdout


def test_tables_edit_round_trip(finals):
    """The table editor rewrites an unchanged table byte for byte, and a dropped record
    shrinks Size by one record."""
    final = harness.emit_final(harness.SAMPLES / "x64" / "fix_globals", finals)
    t = tables.read(final)
    assert t.encode() == final.read_bytes()
    size = t.size
    t.records.remove(t.find("iabs")[0])
    data = t.encode()
    assert struct.unpack_from("<I", data, t.info + 4)[0] == size - 4 * t.stride
    assert len(tables.read_bytes(data).records) == len(t.records)


@pytest.mark.network
def test_live_patch_of_vcruntime140(wine, msvc_pair, tmp_path):
    """A real Microsoft-built DLL: vcruntime140 14.42 running, the forced final image of
    14.44 (every changed function listed: FUNCTION, INVERSE FUNCTION, INVERSE INDIRECT for
    its imports and INVERSE CALL_TARGET for CFG) applied while a thread loops over strchr and
    strstr, which the table redirects, and memset/memcmp, which it does not.  The C reader
    agrees with pehp's decoder on every record, the thread keeps the same results in all
    three phases, and undo leaves the base's code as it was."""
    from pehotpatch import api

    base, inter = (d / "vcruntime140.dll" for d in msvc_pair)
    ff = tmp_path / "functions.txt"
    ff.write_text("\n".join(f.new.name for f in api.diff_pair(base, inter).changed_functions) + "\n")
    final = tmp_path / "final" / "vcruntime140.dll"
    final.parent.mkdir()
    api.emit_final(base, inter, final, functions_file=ff, force=True)
    calls = ["void:memset(buf, 65, 8)", "u32:memcmp(buf, buf+4, 4)", "u64:strchr(buf, 65)", "u64:strchr(buf+16, 65)",
             "u64:strstr(buf, buf+6)", "void:memset(buf+2, 66, 1)", "u64:strstr(buf, buf+1)"]
    p = wine.run("livepatch", base, final, "--iterations", str(ITERATIONS), *calls, native=["vcruntime140"],
                 timeout=300)
    live = harness.parse_live(p.returncode, p.stdout + p.stderr)
    assert live.rc == 0 and live.done, live.stdout

    reading = api.inspect_image(final)
    theirs = [(("i" if c.inverse else "") + tables.TYPES[c.type], r.site, r.target, r.extra[0])
              for c in reading.table.chunks for r in c.records]
    assert live.records == theirs and live.applied == len(theirs)
    assert {k for k, *_ in theirs} == {"iind", "ifunc", "ict", "func"}
    exports = harness.exports(base)
    redirected = {r[1] for r in theirs if r[0] == "func"}
    assert exports["strchr"] in redirected and exports["strstr"] in redirected
    assert exports["memset"] not in redirected and exports["memcmp"] not in redirected

    assert all(live.clean[p] >= ITERATIONS for p in (0, 1, 2)) and live.thread["exit"] == THREAD_EXIT
    before = live.only_vector(0)
    assert _same(live.only_vector(1), before) and _same(live.only_vector(2), before)
    # strchr finds 'A' at buf, none past the 8 bytes set; strstr finds "AA" at buf+0, "AB.." not before buf+1
    _, cmp, found, none, first, _, at = before
    assert cmp.value == 0 and none.value == 0 and found.value == first.value == at.value - 1 != 0
    assert live.undo_identical is True


def _set_word(data: bytearray, off: int, value: int) -> None:
    struct.pack_into("<I", data, off, value)


LOADER_RULES = {
    # edit of the table bytes -> the reason livepatch.c's reader gives
    "obligatory chunk": (lambda t, d: _set_word(d, t.info + t.patch_table, struct.unpack_from(
        "<I", d, t.info + t.patch_table)[0] | 0x40000000), "chunk header has the OBLIGATORY bit"),
    "reserved bit": (lambda t, d: _set_word(d, t.info + t.patch_table, struct.unpack_from(
        "<I", d, t.info + t.patch_table)[0] | 0x1000), "chunk header has reserved bits"),
    "forward ABSOLUTE": (lambda t, d: _set_word(d, t.info + t.patch_table, 0x2C000 | (struct.unpack_from(
        "<I", d, t.info + t.patch_table)[0] & 0xFFF)), "forward chunk that is not FUNCTION"),
    "base checksum": (lambda t, d: _set_word(d, t.base + 0xC, 0x1234),
                      "base identity (TimeDateStamp, CheckSum) does not match the running base"),
    "sequence 0": (lambda t, d: _set_word(d, t.info + 8, 0), "SequenceNumber is 0"),
    "two bases": (lambda t, d: _set_word(d, t.info + 0x10, 2), "BaseImageCount is not 1"),
    "no terminator": (lambda t, d: _set_word(d, t.info + 4, t.size - 4), "patch table runs past Size (no terminating 0)"),
}


@pytest.mark.parametrize("rule", sorted(LOADER_RULES))
def test_tables_breaking_a_loader_rule_are_refused(wine, finals, tmp_path, rule):
    """livepatch.c's reader refuses what the loader refuses (the rules in docs/FORMAT.md),
    before anything is written; body_fix's table starts with its FUNCTION chunk."""
    scenario = harness.SAMPLES / "x64" / "body_fix"
    final = harness.emit_final(scenario, finals)
    t = tables.read(final)
    assert [r.kind for r in t.records] == ["func"]
    data = bytearray(final.read_bytes())
    edit, reason = LOADER_RULES[rule]
    edit(t, data)
    broken = tmp_path / "final.dll"
    broken.write_bytes(bytes(data))
    live = _live(wine, scenario, broken, _calls(wine, scenario), traps=[])
    assert live.rc == 3 and live.refused == [reason], live.stdout
    assert live.applied is None and not live.hpat and not live.done


def test_final_for_another_base_is_refused(wine, finals):
    """fix_globals' final image names pehplib's base; a running gatelib base is refused."""
    other = next(d for d in PATCHABLE if "pehp_version" not in harness.export_names(d / "base.dll"))
    final = harness.emit_final(harness.SAMPLES / "x64" / "fix_globals", finals)
    calls = harness.typed(harness.run_calls(other)[:1], harness.return_types(other / "base.dll"))
    live = harness.run_live(wine, other / "base.dll", final, calls)
    assert live.rc == 3
    assert live.refused == ["base identity (TimeDateStamp, CheckSum) does not match the running base"]


def _second_final(first, scenario, out):
    """``scenario``'s final image as patch 2 for the base that ``first`` patches."""
    from pehotpatch import api

    out.parent.mkdir(parents=True, exist_ok=True)
    api.emit_final(scenario / "base.dll", scenario / "intermediate.dll", out, objects=scenario / "intermediate.objs",
                   functions_file=scenario / "hotpatch_functions.txt", previous=first, sequence=2)
    return out


@pytest.mark.parametrize("second", ["body_fix", "fix_globals"])
def test_second_patch_supersedes_the_first(wine, finals, tmp_path, second):
    """Patch 1 (fix_globals) runs, then patch 2 (sequence 2) for the same base is applied
    while the thread keeps calling: a function only patch 1 redirected (body_fix as patch 2:
    telemetry_record) runs the base again, one both redirect (fix_globals again) gets patch
    2's code through its existing stub, and the thread's results become patch 2's
    intermediate's.  Undo then restores the base exactly."""
    first_dir = harness.SAMPLES / "x64" / "fix_globals"
    second_dir = harness.SAMPLES / "x64" / second
    assert (first_dir / "base.dll").read_bytes() == (second_dir / "base.dll").read_bytes()
    first = harness.emit_final(first_dir, finals)
    then = _second_final(first, second_dir, tmp_path / "second" / f"{second}.dll")
    raw = harness.run_calls(first_dir) + ["telemetry_checksum(0, 16)"]  # body_fix's fix shows here
    calls = harness.repeatable(wine, first_dir, harness.typed(raw, harness.return_types(first_dir / "base.dll")))
    live = harness.run_live(wine, first_dir / "base.dll", first, calls, then=then, iterations=ITERATIONS,
                            traps=harness.trap_rvas(first_dir, {r.value for r in tables.read(first).find("func")}))
    assert live.rc == 0 and live.done and not live.refused, live.stdout
    assert live.then_records and {r[0] for r in live.then_records} <= {"iabs", "iind", "ifunc", "func"}

    first_sites = {r[1] for r in live.records if r[0] == "func"}
    second_sites = {r[1] for r in live.then_records if r[0] == "func"}
    assert sorted(live.reverted) == sorted(first_sites - second_sites)
    assert sorted(live.retargeted) == sorted(first_sites & second_sites)
    assert live.reverted or live.retargeted
    # patch 1's functions carry an int3 from the supersede on: phase 2 shows no fault there
    assert sorted(live.retired) == sorted(r[2] for r in live.records if r[0] == "func")

    expected = [_standalone(wine, d / name, calls) for d, name in (
        (first_dir, "base.dll"), (first_dir, "intermediate.dll"), (second_dir, "intermediate.dll"),
        (first_dir, "base.dll"))]
    for phase, want in enumerate(expected):
        assert live.clean[phase] >= ITERATIONS
        assert _same(live.only_vector(phase), want), (phase, live.stdout)
    assert not _same(expected[1], expected[2]) or second == "fix_globals"
    assert live.undo_identical is True
    assert live.patch_data_changed == [] and live.then_data_changed == []
    assert live.thread["exit"] == THREAD_EXIT


def test_second_patch_with_the_same_sequence_is_refused(wine, finals):
    """Patch 2 must carry a higher SequenceNumber than the patch it supersedes."""
    first_dir = harness.SAMPLES / "x64" / "fix_globals"
    first = harness.emit_final(first_dir, finals)
    then = harness.emit_final(harness.SAMPLES / "x64" / "body_fix", finals)  # sequence 1 as well
    calls = harness.typed(harness.run_calls(first_dir)[:3], harness.return_types(first_dir / "base.dll"))
    live = harness.run_live(wine, first_dir / "base.dll", first, calls, then=then)
    assert live.rc == 3
    assert live.refused == ["the second patch's SequenceNumber is not higher than the first's"]
