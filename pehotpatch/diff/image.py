"""What changed outside the code: global variables (size, type, initial bytes) and the
image itself (machine, sections, exports, imports, entry point, TLS callbacks, resources)."""

from __future__ import annotations

from dataclasses import dataclass, field

from pehotpatch.correlate import Correlation
from pehotpatch.diff.targets import Resolver, describe_target
from pehotpatch.image.symbols import Global, SymbolIndex


@dataclass
class GlobalDiff:
    name: str
    base: Global
    new: Global
    changes: list[str]  # "initializer", "size", "type"
    detail: str = ""


@dataclass(frozen=True, order=True)
class Change:
    """One value on each side: a machine, an image kind, an entry point, a DLL name."""

    base: str
    new: str


@dataclass(frozen=True, order=True)
class NamedChange:
    """A named thing (a section's permissions, an export's target) on each side."""

    name: str
    base: str
    new: str


@dataclass(frozen=True)
class ListChange:
    """A list on each side (the TLS callbacks)."""

    base: tuple[str, ...]
    new: tuple[str, ...]


@dataclass
class ImageDiff:
    machine: Change | None = None
    kind: Change | None = None
    sections_added: list[str] = field(default_factory=list)
    sections_removed: list[str] = field(default_factory=list)
    section_perms_changed: list[NamedChange] = field(default_factory=list)
    exports_added: list[str] = field(default_factory=list)
    exports_removed: list[str] = field(default_factory=list)
    exports_repointed: list[NamedChange] = field(default_factory=list)
    imports_added: list[str] = field(default_factory=list)
    imports_removed: list[str] = field(default_factory=list)
    import_dlls_added: list[str] = field(default_factory=list)
    import_dlls_renamed: list[Change] = field(default_factory=list)
    entry_point: Change | None = None
    tls_callbacks: ListChange | None = None
    resources_changed: bool = False


def compare_global(bix: SymbolIndex, nix: SymbolIndex, gb: Global, gn: Global) -> GlobalDiff | None:
    if gb.is_ref_slot or gn.is_ref_slot:
        return None
    changes: list[str] = []
    detail = []
    if gb.size is not None and gn.size is not None and gb.size != gn.size:
        changes.append("size")
        detail.append(f"size {gb.size} -> {gn.size}")
    if gb.type_name and gn.type_name and gb.type_name != gn.type_name:
        changes.append("type")
        detail.append(f"type {gb.type_name} -> {gn.type_name}")
    size = min(x for x in (gb.size, gn.size) if x is not None) if (gb.size or gn.size) else 0
    if size and not changes:
        size = min(size, 1 << 20)
        db = bix.image.try_read(gb.rva, size)
        dn = nix.image.try_read(gn.rva, size)
        if db is not None and dn is not None and db != dn and not _pointer_only_difference(bix, nix, gb, gn, db, dn):
            changes.append("initializer")
            off = next(i for i in range(size) if db[i] != dn[i])
            detail.append(f"first differing byte at +{off:#x}")
    if not changes:
        return None
    return GlobalDiff(gn.name, gb, gn, changes, "; ".join(detail))


def _pointer_only_difference(bix: SymbolIndex, nix: SymbolIndex, gb: Global, gn: Global,
                             db: bytes, dn: bytes) -> bool:
    """True when the bytes differ only in relocated pointers that point to the same things."""
    brel = set(bix.image.relocations.within(gb.rva, gb.rva + len(db)))
    nrel = set(nix.image.relocations.within(gn.rva, gn.rva + len(dn)))
    if not brel and not nrel:
        return False
    ptr = bix.image.machine.pointer_size
    boffs = sorted(r - gb.rva for r in brel)
    noffs = sorted(r - gn.rva for r in nrel)
    if boffs != noffs:
        return False
    masked_b, masked_n = bytearray(db), bytearray(dn)
    for o in boffs:
        vb = int.from_bytes(db[o : o + ptr], "little") - bix.image.image_base
        vn = int.from_bytes(dn[o : o + ptr], "little") - nix.image.image_base
        if describe_target(bix, vb) != describe_target(nix, vn):
            return False
        masked_b[o : o + ptr] = masked_n[o : o + ptr] = b"\0" * ptr
    return masked_b == masked_n


def compare_image(bix: SymbolIndex, nix: SymbolIndex, corr: Correlation) -> ImageDiff:
    b, n = bix.image, nix.image
    d = ImageDiff()
    if b.machine is not n.machine:
        d.machine = Change(b.machine.value, n.machine.value)
    if b.kind != n.kind:
        d.kind = Change(b.kind, n.kind)
    bsec = {s.name: s for s in b.sections}
    nsec = {s.name: s for s in n.sections}
    d.sections_added = sorted(nsec.keys() - bsec.keys())
    d.sections_removed = sorted(bsec.keys() - nsec.keys())
    for name in sorted(bsec.keys() & nsec.keys()):
        if bsec[name].perms != nsec[name].perms:
            d.section_perms_changed.append(NamedChange(name, bsec[name].perms, nsec[name].perms))
    bexp = {e.name or f"#{e.ordinal}": e for e in b.exports}
    nexp = {e.name or f"#{e.ordinal}": e for e in n.exports}
    d.exports_added = sorted(nexp.keys() - bexp.keys())
    d.exports_removed = sorted(bexp.keys() - nexp.keys())
    rb = Resolver(bix, corr)
    rn = Resolver(nix, None)
    for name in sorted(bexp.keys() & nexp.keys()):
        eb, en = bexp[name], nexp[name]
        if eb.forwarder or en.forwarder:
            if eb.forwarder != en.forwarder:
                d.exports_repointed.append(NamedChange(name, eb.forwarder or describe_target(bix, eb.rva),
                                            en.forwarder or describe_target(nix, en.rva)))
            continue
        if rb.key(eb.rva) != rn.key(en.rva):
            d.exports_repointed.append(NamedChange(name, describe_target(bix, eb.rva), describe_target(nix, en.rva)))
    bimp = {i.key for i in b.imports}
    nimp = {i.key for i in n.imports}
    d.imports_added = sorted(nimp - bimp)
    d.imports_removed = sorted(bimp - nimp)
    bdll = {i.dll.lower() for i in b.imports}
    d.import_dlls_added = sorted({i.dll.lower() for i in n.imports} - bdll)
    d.import_dlls_renamed = sorted({Change(k.partition("!")[0], v.partition("!")[0]) for k, v in corr.import_map.items()})
    if b.entry_rva or n.entry_rva:
        if rb.key(b.entry_rva) != rn.key(n.entry_rva):
            d.entry_point = Change(describe_target(bix, b.entry_rva), describe_target(nix, n.entry_rva))
    if [rb.key(t) for t in b.tls_callbacks] != [rn.key(t) for t in n.tls_callbacks]:
        d.tls_callbacks = ListChange(tuple(describe_target(bix, t) for t in b.tls_callbacks),
                                     tuple(describe_target(nix, t) for t in n.tls_callbacks))
    d.resources_changed = b.resource_digest != n.resource_digest
    return d
