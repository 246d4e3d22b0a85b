"""Module symbol streams: each module (compiland) of the DBI has a stream holding a
4-byte CodeView signature, its symbol records (``sym_byte_size`` bytes including the
signature), then C11/C13 line information and global references (not read here)."""

from __future__ import annotations

import struct

from pehotpatch.errors import FormatError

from ..codeview.subsections import CV_SIGNATURE_C13
from ..codeview.symbols import SymbolScan, scan_symbols
from .dbi import ModuleInfo
from .msf import Msf


def module_symbols(msf: Msf, module: ModuleInfo, path: str | None = None) -> SymbolScan | None:
    """Decode the symbol records of ``module`` (None when it has no symbol stream)."""
    if not module.has_symbols:
        return None
    if module.sym_stream >= msf.num_streams:
        raise FormatError(
            f"module {module.index} ({module.module_name}): symbol stream {module.sym_stream} does not exist",
            path,
        )
    data = msf.stream(module.sym_stream)
    return decode_module_stream(data, module, path)


def decode_module_stream(data: bytes, module: ModuleInfo, path: str | None = None) -> SymbolScan:
    size = module.sym_byte_size
    if size < 4 or size > len(data):
        raise FormatError(
            f"module {module.index} ({module.module_name}): symbol size {size} does not fit its "
            f"stream ({len(data)} bytes)",
            path,
        )
    sig = struct.unpack_from("<I", data, 0)[0]
    if sig != CV_SIGNATURE_C13:
        raise FormatError(
            f"module {module.index} ({module.module_name}): CodeView signature {sig} is not supported "
            "(only C13)",
            path,
        )
    return scan_symbols(data, 4, size, path)
