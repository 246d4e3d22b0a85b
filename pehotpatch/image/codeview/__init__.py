"""CodeView debug information shared by PDB files and COFF object files.

- :mod:`.symbols`: symbol records (procedures, data, publics, S_HOTPATCHFUNC, ...).
- :mod:`.types`: :class:`~.types.TypeTable` (names, sizes, layouts), built on :mod:`.lookup`,
  :mod:`.facts` and :mod:`.names`; type records are indexed by :mod:`.stream`, decoded
  by :mod:`.decode` into :mod:`.records`; leaf kinds and built-in types are in :mod:`.leaves`.
- :mod:`.subsections`: ``.debug$S`` subsections.
"""

from .stream import TypeRecords
from .symbols import (
    CompileSym,
    DataSym,
    HotpatchFuncSym,
    InlineSiteSym,
    ProcSym,
    PubSym,
    SymbolScan,
    ThunkSym,
    scan_symbols,
)
from .types import Field, TypeLayout, TypeTable

__all__ = [
    "CompileSym",
    "DataSym",
    "Field",
    "HotpatchFuncSym",
    "InlineSiteSym",
    "ProcSym",
    "PubSym",
    "SymbolScan",
    "ThunkSym",
    "TypeLayout",
    "TypeRecords",
    "TypeTable",
    "scan_symbols",
]
