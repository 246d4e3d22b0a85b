"""The hot-patch table of a final image as the loader takes it: decoded by pehp's table
reader (:mod:`pehotpatch.table.decode`), then either accepted or refused as a whole
with the first rule the loader enforces that it breaks (:class:`TableRefused`).

pehp's reader is stricter than the loader in a few places (bytes after the terminator,
unknown flag bits, a BufferOffset, an empty chunk); those do not stop the loader and do
not stop the simulation either.
"""

from __future__ import annotations

from pehotpatch.image.pe import PEImage
from pehotpatch.table.decode import check_records
from pehotpatch.table.decode import read_table as decode_table
from pehotpatch.table.format import ABSOLUTE, CALL_TARGET, FUNCTION, INDIRECT
from pehotpatch.table.model import HotPatchTable

__all__ = ["ABSOLUTE", "CALL_TARGET", "FUNCTION", "INDIRECT", "TableRefused", "read_table",
           "has_table", "check_against"]

# Violations of pehp's reader that the loader does not refuse a table for.
NOT_REFUSED = frozenset({"trailing-bytes", "unknown-info-flags", "unknown-base-flags",
                         "buffer-offset", "empty-chunk"})


class TableRefused(Exception):
    """The loader would not apply this table; ``str()`` says why."""


def has_table(pe: PEImage) -> bool:
    lc = pe.load_config
    return lc is not None and bool(lc.hotpatch_table_offset)


def read_table(pe: PEImage) -> HotPatchTable:
    """The table of ``pe``, or :class:`TableRefused` with the loader's reason."""
    rd = decode_table(pe)
    if not rd.present:
        raise TableRefused("the image carries no hot-patch table (HotPatchTableOffset is 0)")
    refusals = [v for v in rd.violations if v.code not in NOT_REFUSED]
    if refusals:
        raise TableRefused(refusals[0].message)
    if rd.table is None:  # pragma: no cover - the reader reports why
        raise TableRefused("the table could not be read")
    return rd.table


def check_against(table: HotPatchTable, base: PEImage, patch: PEImage) -> None:
    """The loader's checks that need the base too: its identity, and every record's site
    and target inside the image it belongs to."""
    if (table.base_timestamp, table.base_checksum) != (base.timestamp, base.checksum):
        raise TableRefused(
            f"the table is for a base with TimeDateStamp {table.base_timestamp:#010x} and CheckSum "
            f"{table.base_checksum:#010x}; this base has {base.timestamp:#010x} and {base.checksum:#010x}")
    problems = check_records(table, patch.machine, patch_size=patch.size_of_image,
                             base_size=base.size_of_image)
    if problems:
        raise TableRefused(problems[0].message)
