"""The hot-patch set: sources, disagreements, decorated names."""

from __future__ import annotations

import pytest

from pehotpatch.errors import InputError
from pehotpatch.hotpatch_set import (
    HotpatchSet,
    add_code_evidence,
    canonicalize,
    read_functions_file,
)


def test_decorated_names_merge_into_the_index_name():
    hs = HotpatchSet()
    hs.available |= {"functions-file", "objects"}
    hs.add("?free_fn@ns@@YAHAEBUDerived@1@@Z", "functions-file")
    hs.add("ns::free_fn", "objects")
    canonicalize(hs, {"?free_fn@ns@@YAHAEBUDerived@1@@Z": "ns::free_fn"}.get)
    assert hs.names == {"ns::free_fn": {"functions-file", "objects"}}
    assert hs.disagreements() == []


def test_disagreements_name_the_missing_source():
    hs = HotpatchSet()
    hs.available |= {"functions-file", "objects"}
    hs.add("listed_only", "functions-file")
    hs.add("compiled_only", "objects")
    hs.add("both", "functions-file")
    hs.add("both", "objects")
    got = dict(hs.disagreements())
    assert set(got) == {"listed_only", "compiled_only"}
    assert "did not mark it" in got["listed_only"]
    assert "not listed in the functions file" in got["compiled_only"]
    assert hs.compiler_marked("both") is True and hs.compiler_marked("listed_only") is False


def test_code_evidence_is_a_source():
    hs = HotpatchSet()
    add_code_evidence(hs, ["f"])
    assert "f" in hs and hs.names["f"] == {"code"} and "code" in hs.available
    assert hs.compiler_marked("f") is None  # no compiler source consulted


def test_functions_file_reading(tmp_path):
    f = tmp_path / "fns.txt"
    f.write_text("alpha\n\n  beta  \n")
    assert read_functions_file(f) == ["alpha", "beta"]
    f.write_bytes(b"\x00\x01binary")
    with pytest.raises(InputError, match="not a text file"):
        read_functions_file(f)
    with pytest.raises(InputError, match="no such file"):
        read_functions_file(tmp_path / "missing.txt")
