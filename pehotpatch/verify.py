"""Verifying a final image against its base: the table passes the loader's rules, names this
base, and holds exactly the records a fresh plan of the base against the final image gives,
with the right first bytes.  Every mismatch is a :class:`VerifyFinding`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pehotpatch.diff import DiffResult, describe_target
from pehotpatch.emit.records import table_from_plan
from pehotpatch.image.pe import PEImage
from pehotpatch.plan.model import PatchPlan
from pehotpatch.table.decode import TableReading, check_records, read_table
from pehotpatch.table.format import FUNCTION, MACHINE_FLAG, TYPE_NAMES
from pehotpatch.table.model import HotPatchTable, encode

VERIFY_SCHEMA = "pehp-verify"


@dataclass(frozen=True)
class VerifyFinding:
    code: str  # stable short name: "record-missing", "first-bytes", "table:<loader rule>", ...
    message: str

    def to_json(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


@dataclass
class VerifyResult:
    final: str
    base: str
    reading: TableReading
    plan: PatchPlan | None
    findings: list[VerifyFinding] = field(default_factory=list)
    checked_records: int = 0

    @property
    def ok(self) -> bool:
        return not self.findings

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    def to_json(self) -> dict[str, Any]:
        from pehotpatch.version import __version__

        return {"schema": VERIFY_SCHEMA, "schema_version": 1,
                "tool": {"name": "pehp", "version": __version__},
                "final": self.final, "base": self.base, "ok": self.ok,
                "records_checked": self.checked_records,
                "findings": [f.to_json() for f in self.findings]}


def _key(rtype: int, inverse: bool) -> str:
    name = TYPE_NAMES.get(rtype, f"type {rtype:#x}")
    return f"INVERSE {name}" if inverse else name


def verify_table(final: PEImage, base: PEImage, diff: DiffResult, plan: PatchPlan) -> VerifyResult:
    """Compare ``final``'s table with what ``plan`` (base against the final image, or its
    intermediate) says it must hold."""
    rd = read_table(final)
    res = VerifyResult(final.path, base.path, rd, plan)
    out = res.findings
    if not rd.present:
        out.append(VerifyFinding("no-table", "the image carries no hot-patch table (HotPatchTableOffset is 0)"))
        return res
    out.extend(VerifyFinding(f"table:{v.code}", v.message) for v in rd.violations)
    t = rd.table
    if t is None:
        return res
    # read_table checked the patch side of every record; the base side needs the base.
    out.extend(VerifyFinding(f"table:{v.code}", v.message)
               for v in check_records(t, final.machine, patch_size=final.size_of_image,
                                      base_size=base.size_of_image)
               if v.code in ("site-outside-image", "target-outside-image") and "base image" in v.message)
    _identity(t, base, out)
    _first_bytes(t, base, final, out)
    _records(t, plan, diff, out)
    res.checked_records = sum(len(c.records) for c in t.chunks)
    if not out:
        expected = table_from_plan(plan)
        expected.sequence = t.sequence
        expected.base_sequence = t.base_sequence
        if encode(expected) != rd.raw:
            off = next(i for i, (a, b) in enumerate(zip(encode(expected), rd.raw, strict=False)) if a != b) \
                if len(encode(expected)) == len(rd.raw) else min(len(encode(expected)), len(rd.raw))
            out.append(VerifyFinding("table-bytes", f"the table differs from the one pehp writes for this plan at byte {off:#x} of the table"))
    return res


def _identity(t: HotPatchTable, base: PEImage, out: list[VerifyFinding]) -> None:
    if t.base_timestamp != base.timestamp:
        out.append(VerifyFinding("base-timestamp", f"the table names a base with TimeDateStamp {t.base_timestamp:#x}; this base has {base.timestamp:#x}"))
    if t.base_checksum != base.checksum:
        out.append(VerifyFinding("base-checksum", f"the table names a base with CheckSum {t.base_checksum:#x}; this base has {base.checksum:#x}"))
    want = MACHINE_FLAG[base.machine]
    if t.base_flags & 0x1C and t.base_flags & 0x1C != want:
        out.append(VerifyFinding("base-machine", f"the base descriptor's machine flags {t.base_flags & 0x1C:#x} are not the base's ({want:#x}, {base.machine.value})"))
    if t.base_sequence is not None and t.base_sequence != t.sequence:
        out.append(VerifyFinding("base-sequence", f"the base descriptor's sequence number {t.base_sequence} differs from the header's {t.sequence}"))


def _first_bytes(t: HotPatchTable, base: PEImage, final: PEImage, out: list[VerifyFinding]) -> None:
    for c in t.chunks:
        if c.type != FUNCTION:
            continue
        img = final if c.inverse else base
        side = "patch" if c.inverse else "base"
        for r in c.records:
            raw = img.try_read(r.site, 4)
            if raw is None:
                continue  # reported as a site outside the image
            have = int.from_bytes(raw, "little")
            rec = r.extra[0] if r.extra else None
            if rec is None:
                out.append(VerifyFinding("first-bytes", f"{c.type_name} record for {side} {r.site:#x} records no first bytes (ExtraPatchSize 0): the loader cannot check it"))
            elif rec & 0xFFFF != have & 0xFFFF:
                out.append(VerifyFinding("first-bytes", f"{c.type_name} record for {side} {r.site:#x}: recorded first bytes {rec & 0xFFFF:04x} are not the function's {have & 0xFFFF:04x} (the loader refuses the patch)"))
            elif rec != have:
                out.append(VerifyFinding("first-bytes", f"{c.type_name} record for {side} {r.site:#x}: recorded first 4 bytes {rec:08x} are not the function's {have:08x}"))


def _records(t: HotPatchTable, plan: PatchPlan, diff: DiffResult, out: list[VerifyFinding]) -> None:
    expected = table_from_plan(plan)
    want: dict[str, set[tuple[int, int]]] = {}
    have: dict[str, set[tuple[int, int]]] = {}
    for tbl, into in ((expected, want), (t, have)):
        for c in tbl.chunks:
            into.setdefault(_key(c.type, c.inverse), set()).update((r.site, r.target) for r in c.records)
    bix, nix = diff.base.index, diff.new.index

    def name(kind: str, r: tuple[int, int]) -> str:
        inverse = kind.startswith("INVERSE")
        s_ix, t_ix = (nix, bix) if inverse else (bix, nix)
        return f"{describe_target(s_ix, r[0])} ({r[0]:#x}) -> {describe_target(t_ix, r[1])} ({r[1]:#x})"

    for kind in sorted(set(want) | set(have)):
        w, h = want.get(kind, set()), have.get(kind, set())
        by_site_w = {s: tg for s, tg in w}
        for r in sorted(w - h):
            alt = [x for x in h if x[0] == r[0]]
            if alt:
                out.append(VerifyFinding("record-target", f"{kind} record for {name(kind, r).split(' -> ')[0]} points at {name(kind, alt[0]).split(' -> ')[1]}; the plan says {name(kind, r).split(' -> ')[1]}"))
            else:
                out.append(VerifyFinding("record-missing", f"{kind} record missing: {name(kind, r)}"))
        for r in sorted(h - w):
            if r[0] in by_site_w:
                continue  # reported as a wrong target above
            out.append(VerifyFinding("record-extra", f"{kind} record the plan does not call for: {name(kind, r)}"))
    dup: dict[tuple[str, int], int] = {}
    for c in t.chunks:
        for rec in c.records:
            k = (_key(c.type, c.inverse), rec.site)
            dup[k] = dup.get(k, 0) + 1
    for (kind, site), n in sorted(dup.items()):
        if n > 1:
            out.append(VerifyFinding("record-duplicate", f"{kind}: {n} records write the same site {site:#x}"))


def same_image_but_table(intermediate: PEImage, final: PEImage) -> str | None:
    """Why ``final`` is not ``intermediate`` plus a table section (None when it is)."""
    if final.machine != intermediate.machine:
        return f"the final image is {final.machine.value}, the intermediate {intermediate.machine.value}"
    if len(final.sections) != len(intermediate.sections) + 1:
        return (f"the final image has {len(final.sections)} sections, the intermediate {len(intermediate.sections)}: "
                f"expected one more")
    if final.timestamp != intermediate.timestamp or final.entry_rva != intermediate.entry_rva:
        return "the final image's TimeDateStamp or entry point differ from the intermediate's"
    lc = final.load_config
    skip = None
    if lc is not None:
        from pehotpatch.image.headers import load_config_struct

        skip = final.rva_to_offset(lc.rva + load_config_struct(final.machine.pointer_size).offset("HotPatchTableOffset"))
    for a, b in zip(intermediate.sections, final.sections, strict=False):
        if (a.name, a.rva, a.virtual_size) != (b.name, b.rva, b.virtual_size):
            return f"section {a.name} of the intermediate is not at the same place in the final image"
        x = bytearray(intermediate.data[a.raw_offset:a.raw_offset + a.raw_size])
        y = bytearray(final.data[b.raw_offset:b.raw_offset + b.raw_size])
        if skip is not None and b.raw_offset <= skip < b.raw_offset + b.raw_size:
            k = skip - b.raw_offset
            x[k:k + 4] = y[k:k + 4] = b"\0\0\0\0"
        if x != y:
            return f"section {a.name}'s bytes differ from the intermediate's"
    return None
