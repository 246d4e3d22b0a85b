"""Buffer arguments of `pehp simulate` calls: bytes(N[, SEED]), zeros(N), "text".

Each buffer is placed at the same address in every world, its address is passed, and its
contents after the call are part of the call's outcome (a BLAKE2b-64 digest).  The
expected values come from outside pehp: the samples' telemetry_checksum is CRC-32 (the
value zlib computes), report_format_u32 writes the decimal digits and a NUL."""

from __future__ import annotations

import hashlib
import json
import zlib

import pytest
from conftest import SAMPLES
from hypothesis import given, settings
from hypothesis import strategies as st

from pehotpatch.api import emit_final, simulate
from pehotpatch.cli import main as cli_main
from pehotpatch.emulate.calls import MAX_BUFFER, Buffer, parse_call
from pehotpatch.errors import UsageError

S = SAMPLES / "x64" / "body_fix"


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=8).hexdigest()


@pytest.fixture(scope="module")
def final(tmp_path_factory):
    out = tmp_path_factory.mktemp("buffers") / "final.dll"
    emit_final(S / "base.dll", S / "intermediate.dll", out, functions_file=S / "hotpatch_functions.txt")
    return out


def test_parse_buffer_arguments():
    c = parse_call('f(bytes(16), bytes(0x20, 7), zeros(8), "a, b", 3)')
    assert c.args == (Buffer("bytes", 16), Buffer("bytes", 32, 7), Buffer("zeros", 8),
                      Buffer("text", 5, text="a, b"), 3)
    assert c.text == 'f(bytes(16), bytes(32, 7), zeros(8), "a, b", 3)'
    assert Buffer("text", 5, text="a, b").content() == b"a, b\0"
    assert Buffer("zeros", 3).content() == b"\0\0\0"
    # the pseudo-random bytes are fixed by size and seed, a prefix of longer ones
    a, b = Buffer("bytes", 100, 1).content(), Buffer("bytes", 1000, 1).content()
    assert len(a) == 100 and b[:100] == a and Buffer("bytes", 100, 2).content() != a


@pytest.mark.parametrize("text", ["f(bytes(0))", f"f(zeros({MAX_BUFFER + 1}))", 'f("tab\there")',
                                  'f("x"y)', "f(bytes(4, 2, 3))", "f(bytes(-1))", "f(zeros())"])
def test_bad_buffer_arguments_are_usage_errors(text):
    with pytest.raises(UsageError):
        parse_call(text)


def test_input_buffer_reaches_the_function(final):
    data = Buffer("bytes", 1000, 3).content()
    r = simulate(S / "base.dll", final, ["telemetry_checksum(bytes(1000, 3), 1000)", 'telemetry_checksum("hello", 5)'])
    assert r.ok, r.findings
    for row, expected in zip(r.calls, (zlib.crc32(data), zlib.crc32(b"hello")), strict=True):
        for res in (row.base, row.patched, row.intermediate):
            assert res.value == expected
    # an input buffer the function only reads is unchanged after the call
    assert r.calls[0].patched.buffers == [_digest(data)]
    assert r.calls[1].patched.buffers == [_digest(b"hello\0")]


def test_output_buffer_is_compared(final):
    r = simulate(S / "base.dll", final, ["report_format_u32(zeros(16), 16, 1234)"])
    assert r.ok
    row = r.calls[0]
    assert row.patched.value == 4
    assert row.base.buffers == row.patched.buffers == row.intermediate.buffers == [_digest(b"1234\0" + bytes(11))]
    assert row.patched.outcome() == f"4 [{_digest(b'1234' + bytes(12))}]"


def test_reading_past_a_buffer_faults(final):
    """A buffer ends right before an unmapped page (16-byte sizes end exactly there)."""
    r = simulate(S / "base.dll", final, ["telemetry_checksum(bytes(16), 16)", "telemetry_checksum(bytes(16), 17)"])
    first, second = r.calls
    assert first.patched.fault is None and first.patched.value == zlib.crc32(Buffer("bytes", 16).content())
    for res in (second.base, second.patched, second.intermediate):
        assert res.fault is not None and res.fault.kind == "read"


def test_the_fix_shows_with_a_null_buffer(final):
    """body_fix: telemetry_checksum(NULL, n) crashed in the base and returns 0 once patched."""
    r = simulate(S / "base.dll", final, ["telemetry_checksum(0, 4)", 'telemetry_checksum("abcd", 4)'])
    assert r.ok
    assert r.calls[0].base.fault is not None and r.calls[0].patched.value == 0 == r.calls[0].intermediate.value
    assert r.calls[1].patched.value == zlib.crc32(b"abcd")


def test_cli_json_carries_buffer_digests(final, capsys):
    code = cli_main(["simulate", str(S / "base.dll"), str(final), "--json",
                     "-c", "report_format_u32(zeros(8), 8, 77)"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0
    assert doc["calls"][0]["patched"]["buffers"] == [_digest(b"77\0" + bytes(5))]


def test_too_many_buffer_bytes_is_a_usage_error(final, capsys):
    calls = [f"telemetry_checksum(bytes({MAX_BUFFER}), 1)"] * 64
    assert cli_main(["simulate", str(S / "base.dll"), str(final), *[a for c in calls for a in ("-c", c)]]) == 2
    assert "scratch area" in capsys.readouterr().err


ALPHABET = 'f(),"xbytesrozn0123456789x \t-'


@settings(max_examples=2000, deadline=None)
@given(st.text(alphabet=ALPHABET, max_size=40))
def test_any_call_text_parses_or_is_a_usage_error(text):
    """A call never raises anything but a usage error; what parses spells back to itself."""
    try:
        c = parse_call(text)
    except UsageError:
        return
    assert parse_call(c.text) == c
    for b in c.buffers:
        assert len(b.content()) == b.size
