"""The declaration layer: decode and encode from one declaration, bounds, and the PE
declarations' offsets against the values winnt.h gives."""

import struct

import pytest

from pehotpatch.image.headers import (
    LOAD_CONFIG32,
    LOAD_CONFIG64,
    OPTIONAL_HEADER32,
    OPTIONAL_HEADER64,
    SECTION_HEADER,
    min_hotpatch_load_config,
)
from pehotpatch.structs import StructError, declare

S = declare("T", 12, ("a", 0, 4, "first"), ("b", 4, 2, "second"), ("c", 8, 4, "third"))


def test_encode_decode_round_trip():
    raw = S.encode({"a": 0x11223344, "b": 0xBEEF, "c": 7})
    assert raw == struct.pack("<IHxxI", 0x11223344, 0xBEEF, 7)
    assert S.decode(raw) == {"a": 0x11223344, "b": 0xBEEF, "c": 7}


def test_decode_omits_fields_past_the_limit():
    raw = S.encode({"a": 1, "b": 2, "c": 3})
    assert S.decode(raw, limit=6) == {"a": 1, "b": 2}
    assert S.decode(raw[:7]) == {"a": 1, "b": 2}
    assert S.read(raw[:7], "c") is None


def test_encode_refuses_unknown_fields_and_wide_values():
    with pytest.raises(StructError):
        S.encode({"zz": 1})
    with pytest.raises(StructError):
        S.encode({"b": 0x10000})


def test_overlapping_declaration_past_size_is_refused():
    with pytest.raises(StructError):
        declare("U", 4, ("a", 2, 4, ""))


def test_windows_offsets():
    # winnt.h: IMAGE_LOAD_CONFIG_DIRECTORY64 is 0x140 bytes, 32-bit 0xC0
    assert (LOAD_CONFIG64.size, LOAD_CONFIG32.size) == (0x140, 0xC0)
    assert LOAD_CONFIG64.offset("HotPatchTableOffset") == 0xF0
    assert LOAD_CONFIG32.offset("HotPatchTableOffset") == 0x94
    assert LOAD_CONFIG64.offset("CHPEMetadataPointer") == 0xC8
    assert LOAD_CONFIG64.offset("GuardCFFunctionTable") == 0x80
    assert LOAD_CONFIG32.offset("GuardFlags") == 0x58
    assert (min_hotpatch_load_config(8), min_hotpatch_load_config(4)) == (0xF4, 0x98)
    assert OPTIONAL_HEADER64.offset("CheckSum") == 64 and OPTIONAL_HEADER64.size == 112
    assert OPTIONAL_HEADER32.offset("ImageBase") == 28 and OPTIONAL_HEADER32.size == 96
    assert SECTION_HEADER.offset("Characteristics") == 36
