"""`emit-final`: the final image, written atomically and re-read by two readers before it
is moved into place (pehp's own reader, which also decodes the table strictly, and LIEF)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pehotpatch.emit.image import Written, check_writable, write_table
from pehotpatch.emit.records import table_from_plan
from pehotpatch.errors import InputError, PehpError
from pehotpatch.image.headers import load_config_struct
from pehotpatch.image.pe import PEImage
from pehotpatch.plan.model import PatchPlan
from pehotpatch.table.decode import TableReading, read_table
from pehotpatch.table.format import FUNCTION, SECTION_NAME
from pehotpatch.table.model import HotPatchTable, encode


@dataclass
class EmitResult:
    """What emit-final wrote (or, with ``output`` None, would write)."""

    output: str | None
    table_rva: int
    table_size: int
    section: str
    sequence: int
    records: dict[str, int]  # chunk type name -> records
    forced: bool
    check_verdict: str
    notes: list[str] = field(default_factory=list)
    reverts: list[str] = field(default_factory=list)  # functions an earlier patch redirected, this one not
    data: bytes = b""

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": "pehp-emit-final", "schema_version": 1,
            "output": self.output, "section": self.section,
            "table_rva": f"{self.table_rva:#x}", "table_size": self.table_size,
            "sequence": self.sequence, "records": dict(self.records), "forced": self.forced,
            "check_verdict": self.check_verdict, "reverts": list(self.reverts), "notes": list(self.notes),
        }


def record_counts(table: HotPatchTable) -> dict[str, int]:
    out: dict[str, int] = {}
    for c in table.chunks:
        out[c.type_name] = out.get(c.type_name, 0) + len(c.records)
    return out


def previous_reverts(previous: PEImage, plan: PatchPlan,
                     base_name: Callable[[int], str] | None = None) -> list[str]:
    """Check a cumulative patch against the previous one for the same base; return the
    base functions the previous patch redirected that this one does not (they revert)."""
    rd = read_table(previous)
    if not rd.present or rd.table is None:
        raise InputError("the previous final image carries no readable hot-patch table", previous.path)
    prev = rd.table
    if (prev.base_timestamp, prev.base_checksum) != (plan.base.timestamp, plan.base.checksum):
        raise InputError(f"the previous final image patches another base (TimeDateStamp {prev.base_timestamp:#x}, "
                         f"CheckSum {prev.base_checksum:#x}; this base has {plan.base.timestamp:#x}, "
                         f"{plan.base.checksum:#x})", previous.path)
    if plan.sequence <= prev.sequence:
        raise InputError(f"the previous final image has sequence number {prev.sequence}; this patch needs a "
                         f"higher --sequence (the loader keeps the patch with the higher number)", previous.path)
    now = {f.base_rva for f in plan.forward}
    return sorted(base_name(r.site) if base_name else f"base function at {r.site:#x}"
                  for r in prev.records(FUNCTION, inverse=False) if r.site not in now)


def build_final(intermediate: PEImage, plan: PatchPlan, *, check_verdict: str, forced: bool,
                keep_signature: bool = False, previous: PEImage | None = None,
                base_name: Callable[[int], str] | None = None) -> EmitResult:
    """The final image's bytes (in ``EmitResult.data``), verified by re-reading them."""
    check_writable(intermediate, keep_signature=keep_signature)
    reverts = previous_reverts(previous, plan, base_name) if previous is not None else []
    table = table_from_plan(plan)
    raw = encode(table)
    w: Written = write_table(intermediate, lambda _rva: raw, name=SECTION_NAME, keep_signature=keep_signature)
    try:
        verify_written(w.data, raw, w.table_rva, intermediate)
    except (ValueError, PehpError) as exc:
        raise InputError(f"the final image made from it does not read back as written ({exc}); nothing written",
                         intermediate.path) from None
    notes = list(w.notes)
    if forced:
        notes.append(f"written with --force although the check's verdict is {check_verdict}")
    if not plan.forward:
        notes.append("the plan redirects no function: the table is empty")
    if plan.refusals:
        first = "; ".join(f"{r.reference} -> {r.target}" for r in plan.refusals[:3])
        more = f" and {len(plan.refusals) - 3} more" if len(plan.refusals) > 3 else ""
        notes.append(f"{len(plan.refusals)} reference(s) the plan refused are not in the table "
                     f"({first}{more}; `pehp plan` lists each with its reason)")
    return EmitResult(None, w.table_rva, len(raw), SECTION_NAME, plan.sequence, record_counts(table),
                      forced, check_verdict, notes, reverts, w.data)


def verify_written(data: bytes, table_raw: bytes, table_rva: int, source: PEImage) -> None:
    """Re-read the written image with pehp's reader and with LIEF; raise ValueError when
    either disagrees with what was meant to be written."""
    from pehotpatch.image.pe_reader import parse_pe

    img = parse_pe(data, source.path)
    rd: TableReading = read_table(img)
    if not rd.present or rd.rva != table_rva or rd.raw != table_raw:
        raise ValueError("pehp's reader does not find the table that was written")
    if rd.violations:
        raise ValueError("the written table breaks a loader rule: " + rd.violations[0].message)
    if len(img.sections) != len(source.sections) + 1 or img.entry_rva != source.entry_rva:
        raise ValueError("the written image's sections or entry point are not the intermediate's plus one section")
    # Every section's bytes are the intermediate's, but for HotPatchTableOffset.
    lc = source.load_config
    assert lc is not None
    field_off = source.rva_to_offset(lc.rva + load_config_struct(source.machine.pointer_size).offset("HotPatchTableOffset"))
    expected = bytearray(source.data)
    if field_off is not None:
        expected[field_off:field_off + 4] = table_rva.to_bytes(4, "little")
    for a, b in zip(source.sections, img.sections, strict=False):
        if (a.name, a.rva, a.raw_offset, a.raw_size) != (b.name, b.rva, b.raw_offset, b.raw_size):
            raise ValueError(f"section {a.name} moved")
        if img.data[b.raw_offset:b.raw_offset + b.raw_size] != expected[a.raw_offset:a.raw_offset + a.raw_size]:
            raise ValueError(f"section {a.name}'s bytes changed beyond HotPatchTableOffset")
    if img.checksum != img.checksum_computed:
        raise ValueError("the PE checksum does not match the written bytes")
    import lief

    lief.logging.disable()
    parsed = lief.PE.parse(data)
    if parsed is None:
        raise ValueError("LIEF cannot parse the written image")
    lief_lc = parsed.load_configuration
    if lief_lc is None or lief_lc.hotpatch_table_offset != table_rva:
        raise ValueError("LIEF does not see HotPatchTableOffset pointing at the table")
    if len(parsed.sections) != len(source.sections) + 1:
        raise ValueError("LIEF sees another number of sections")


def write_final(result: EmitResult, output: str | os.PathLike[str], *, overwrite: bool,
                inputs: list[Path]) -> Path:
    """Write the final image atomically (re-read before it is moved into place)."""
    from pehotpatch.output import write_atomic

    data = result.data

    def same(back: bytes) -> None:
        if back != data:
            raise ValueError("the bytes read back differ")

    dest = write_atomic(output, data, overwrite=overwrite, inputs=inputs, validate=same)
    result.output = str(dest)
    return dest
