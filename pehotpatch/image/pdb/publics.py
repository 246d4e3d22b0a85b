"""Public symbols (S_PUB32) and global data from the PDB symbol record stream.

The symbol record stream (its number is in the DBI header) holds every public and
global symbol record; the publics and globals streams are only hash tables over it,
so pehp reads the records directly in one flat pass.
"""

from __future__ import annotations

from ..codeview.symbols import PubSym, SymbolScan, scan_symbols

# A public symbol: name, rva (None when the segment is 0 / absolute, or outside the PDB's
# section headers), segment, offset, flags, and the is_function / is_code properties.
PublicSymbol = PubSym


def scan_symbol_records(
    data: bytes, section_vas: list[int] | None = None, path: str | None = None
) -> SymbolScan:
    """Decode the symbol record stream (flat: no scopes).

    ``section_vas`` (the virtual address of each 1-based section, from the PDB's section
    header stream) gives every public its RVA.
    """
    return scan_symbols(data, 0, len(data), path, nested=False, section_vas=section_vas)
