"""The types of each procedure's locals and parameters, from a PDB's module streams.

CodeView describes every local variable and parameter of a procedure with a record
inside its scope: ``S_LOCAL`` (optimised code, with def-ranges), ``S_REGREL32``
(register-relative: frame variables), ``S_BPREL32`` and ``S_REGISTER``.  Their type
indexes say which types changed code handles even when no signature or global shows
them: a struct only ever built in a byte pool, reached through a cast pointer, or kept
on the stack.  The PDB reader keeps none of these records, so this module reads them
from the module streams when a rule asks (once per PDB).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from functools import lru_cache

from pehotpatch.errors import FormatError, InputError
from pehotpatch.image.codeview.symbols import iter_records, scan_symbols
from pehotpatch.image.pdb.msf import Msf

S_REGISTER = 0x1106
S_BPREL32 = 0x110B
S_REGREL32 = 0x1111
S_LOCAL = 0x113E

# Byte offset of the type index inside each record (after u16 length, u16 kind).
_TYPE_FIELD = {S_LOCAL: 4, S_REGISTER: 4, S_BPREL32: 8, S_REGREL32: 8}
_U32 = struct.Struct("<I")


def local_types(pdb: object, names: Iterable[str] | None = None) -> dict[str, frozenset[int]]:
    """Procedure name -> the type indexes of its locals and parameters (empty when the
    PDB cannot be read again or has no module streams).

    With ``names``, only the module streams that hold those procedures are read (the
    result may hold other procedures of the same modules)."""
    path = getattr(pdb, "path", None)
    dbi = getattr(pdb, "dbi", None)
    if not path or dbi is None:
        return {}
    mods = [m for m in dbi.modules if m.has_symbols]
    if names is not None:
        wanted: set[int] = set()
        lookup = getattr(pdb, "procedures_named", None)
        for n in names:
            for proc in lookup(n) if lookup is not None else ():
                wanted.add(proc.module_index)
        mods = [m for m in mods if m.index in wanted]
    if not mods:
        return {}
    return _read(str(path), tuple(sorted((m.sym_stream, m.sym_byte_size) for m in mods)))


@lru_cache(maxsize=8)
def _read(path: str, streams: tuple[tuple[int, int], ...]) -> dict[str, frozenset[int]]:
    out: dict[str, set[int]] = {}
    try:
        msf = Msf.open(path)
        for stream, size in streams:
            if not msf.has_stream(stream):
                continue
            data = msf.stream(stream)
            if size < 4 or size > len(data):
                continue
            scan = scan_symbols(data, 4, size, path)
            for proc in scan.procedures:
                if not proc.end or not proc.record_offset < proc.end <= size:
                    continue
                got = out.setdefault(proc.name, set())
                for pos, kind, rec_end in iter_records(data, proc.record_offset, proc.end, path):
                    off = _TYPE_FIELD.get(kind)
                    if off is not None and pos + off + 4 <= rec_end:
                        got.add(_U32.unpack_from(data, pos + off)[0])
    except (FormatError, InputError, OSError):
        return {}
    return {k: frozenset(v) for k, v in out.items()}
