"""The correlation's result: pairs of functions and globals, and the maps the comparison
reads."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from pehotpatch.image.symbols import Function, Global

_SUFFIX = re.compile(r"(\.(cold|part|isra|constprop|llvm|lto_priv|localalias)(\.\d+)*)+$")


def canonical_name(name: str) -> str:
    """A name without compiler-added suffixes (``f.cold``, ``f.llvm.123``)."""
    return _SUFFIX.sub("", name)


@dataclass(frozen=True, slots=True)
class FunctionPair:
    base: Function
    new: Function
    method: str


@dataclass(frozen=True, slots=True)
class GlobalPair:
    base: Global
    new: Global
    method: str


@dataclass
class Correlation:
    functions: list[FunctionPair] = field(default_factory=list)
    removed_functions: list[Function] = field(default_factory=list)
    added_functions: list[Function] = field(default_factory=list)
    globals: list[GlobalPair] = field(default_factory=list)
    removed_globals: list[Global] = field(default_factory=list)
    added_globals: list[Global] = field(default_factory=list)
    function_map: dict[int, int] = field(default_factory=dict)  # base start -> new start
    global_map: dict[int, int] = field(default_factory=dict)
    data_map: dict[int, int] = field(default_factory=dict)  # unnamed data, by votes
    # import keys of the base ("old.dll!f") in the new image's terms, for DLLs renamed
    # between the builds (see import_renames); keys not in it are unchanged
    import_map: dict[str, str] = field(default_factory=dict)

    def import_key(self, base_key: str) -> str:
        return self.import_map.get(base_key, base_key)

    def methods(self) -> dict[str, int]:
        return dict(sorted(Counter(p.method for p in self.functions).items()))
