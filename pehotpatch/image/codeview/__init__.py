"""CodeView debug information shared by PDB files and COFF object files.

- :mod:`.symbols`: symbol records (procedures, data, publics, S_HOTPATCHFUNC, ...).
- :mod:`.types`: type records and :class:`~.types.TypeTable` (names, sizes, layouts).
- :mod:`.subsections`: ``.debug$S`` subsections.
"""

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
from .types import Field, TypeLayout, TypeRecords, TypeTable

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
