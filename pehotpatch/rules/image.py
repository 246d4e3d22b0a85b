"""HP1xx: image-level facts that the hot-patch engine needs unchanged (or present)."""

from __future__ import annotations

from collections.abc import Iterator

from pehotpatch.image.machine import Machine
from pehotpatch.image.pe import HOTPATCH_TABLE_OFFSET_FIELD
from pehotpatch.rules import ERROR, NOTE, WARNING, Finding, checker, define, finding, hx
from pehotpatch.rules.context import Context
from pehotpatch.vocab import Side

define(
    "HP101", "MachineChanged", "machine differs", ERROR,
    """The base and the intermediate are built for different machines. A patch image
    is applied to a running base image of the same machine; its code cannot replace
    functions of another instruction set.""",
)
define(
    "HP102", "ImageKindChanged", "image kind differs", ERROR,
    """One image is a DLL and the other an EXE. The patch must be the same kind of
    image as the base it patches, because after a reboot it replaces the base and is
    loaded the same way.""",
)
define(
    "HP103", "EntryPointChanged", "entry point changed", ERROR,
    """The entry point of the intermediate is a different function from the base's.
    The entry point of the running image has already run (and keeps running for new
    threads in a DLL); a hot-patch cannot move it, so a changed entry point means the
    patch would behave differently live than after a reboot.""",
)
define(
    "HP104", "TlsCallbacksChanged", "TLS callbacks changed", ERROR,
    """The TLS callback list differs. The loader calls TLS callbacks from the list
    registered when the base was loaded; a hot-patch cannot add, remove or reorder
    them.""",
)
define(
    "HP105", "SectionsChanged", "section added or removed", WARNING,
    """A section exists in only one of the two images. The patch image is loaded as a
    whole image, so a new section is not itself fatal, but it usually means new data
    or a changed build configuration whose contents the running base does not have;
    check that nothing the patched code relies on lives there. A .reloc section that
    appears only because the intermediate's __ref_ pointers need base relocations (a
    base with no relocations at all) is hot-patch plumbing: a note.""",
)
define(
    "HP106", "SectionPermissionsChanged", "section permissions changed", ERROR,
    """A section present in both images changed its read/write/execute permissions.
    Code and data that the patch shares with the running base (globals reached through
    __ref_ pointers, callees redirected to the base) keep the base's permissions, so the
    patch cannot rely on the new ones.""",
)
define(
    "HP107", "LoadConfigHotpatchField", "load config cannot hold HotPatchTableOffset", ERROR,
    """The intermediate has no load configuration directory, or its Size field is too
    small to cover HotPatchTableOffset (offset 0xF0 on x64/ARM64, 0x94 on x86). The
    hot-patch metadata is found through that field, so pehp has nowhere to record it.
    Fix it at link time: define _load_config_used (x86: __load_config_used) as an
    IMAGE_LOAD_CONFIG_DIRECTORY whose Size is at least 0xF4 on x64/ARM64 or 0x98 on x86
    (the CRT's default definition in current MSVC toolsets already is).""",
)
define(
    "HP108", "ResourcesChanged", "resources changed", WARNING,
    """The resource section differs. Resources are read from the image that was
    loaded: a hot-patch does not replace the running image's resources, so the change
    takes effect only after a reboot.""",
)

_REQUIRED_LC_SIZE = {m: off + 4 for m, off in HOTPATCH_TABLE_OFFSET_FIELD.items()}


@checker("HP1xx", emits=("HP101", "HP102", "HP103", "HP104", "HP105", "HP106", "HP107", "HP108"))
def check_image(ctx: Context) -> Iterator[Finding]:
    d = ctx.diff.image
    if d.machine is not None:
        yield finding(
            "HP101", f"machine differs: base is {d.machine.base}, intermediate is {d.machine.new}",
            kind="image", evidence={"base": d.machine.base, "intermediate": d.machine.new},
            explanation=[f"the base is built for {d.machine.base} and the intermediate for {d.machine.new}"],
        )
    if d.kind is not None:
        yield finding(
            "HP102", f"image kind differs: base is {d.kind.base.upper()}, intermediate is {d.kind.new.upper()}",
            kind="image", evidence={"base": d.kind.base, "intermediate": d.kind.new},
        )
    if d.entry_point is not None:
        yield finding(
            "HP103", f"entry point changed: {d.entry_point.base} -> {d.entry_point.new}",
            kind="image", evidence={"base": d.entry_point.base, "intermediate": d.entry_point.new},
            explanation=[f"the base starts at {d.entry_point.base}, the intermediate at {d.entry_point.new}",
                         "a running image's entry point cannot be moved by a hot-patch"],
        )
    if d.tls_callbacks is not None:
        b, n = list(d.tls_callbacks.base), list(d.tls_callbacks.new)
        yield finding(
            "HP104", f"TLS callbacks changed: [{', '.join(b)}] -> [{', '.join(n)}]",
            kind="image", evidence={"base": list(b), "intermediate": list(n)},
        )
    for name in d.sections_added:
        if name == ".reloc":
            yield _reloc_added(ctx)
            continue
        yield finding("HP105", f"section {name} added", symbol=name, kind="section",
                      evidence={"change": "added"},
                      explanation=[f"the intermediate has a section {name} that the base has not"])
    for name in d.sections_removed:
        yield finding("HP105", f"section {name} removed", symbol=name, kind="section",
                      evidence={"change": "removed"},
                      explanation=[f"the base has a section {name} that the intermediate has not"])
    for change in d.section_perms_changed:
        name, pb, pn = change.name, change.base, change.new
        yield finding("HP106", f"section {name} permissions changed: {pb} -> {pn}", symbol=name,
                      kind="section", evidence={"base": pb, "intermediate": pn})
    yield from _load_config(ctx)
    if d.resources_changed:
        yield finding("HP108", "resources changed", kind="image",
                      explanation=["the resource section's bytes differ",
                                   "the running image keeps its resources until a reboot"])


def _reloc_added(ctx: Context) -> Finding:
    """HP105 for an added .reloc: a note when every new relocation is a __ref_ slot's."""
    img = ctx.nix.image
    base_count = len(ctx.bix.image.relocations.within(0, ctx.bix.image.size_of_image))
    sites = img.relocations.within(0, img.size_of_image)
    plumbing: list[str] = []
    other: list[str] = []
    for r in sites:
        g = ctx.nix.global_at(r)
        if g is not None and g.is_ref_slot:
            plumbing.append(g.name)
        else:
            other.append(ctx.describe(Side.NEW, r))
    ev = {"change": "added", "relocations": len(sites), "ref_slot_relocations": len(plumbing),
          "other_relocations": other[:20], "base_relocations": base_count}
    if sites and not other and not base_count:
        return finding(
            "HP105", "section .reloc added for the __ref_ pointers only", symbol=".reloc", kind="section",
            severity=NOTE, evidence=ev,
            explanation=["the base has no base relocations; the intermediate has "
                         f"{len(sites)}, each in a __ref_ pointer ({', '.join(sorted(set(plumbing))[:6])})",
                         "__ref_ pointers hold addresses, so they need relocations: that is hot-patch plumbing"])
    expl = ["the intermediate has a section .reloc that the base has not"]
    if other:
        expl.append(f"{len(other)} of its {len(sites)} relocations are not __ref_ pointers: "
                    f"{', '.join(other[:6])}" + (" ..." if len(other) > 6 else ""))
    return finding("HP105", "section .reloc added", symbol=".reloc", kind="section", evidence=ev,
                   explanation=expl)


def _load_config(ctx: Context) -> Iterator[Finding]:
    pe = ctx.new.pe
    need = _REQUIRED_LC_SIZE.get(pe.machine, 0xF4)
    field = HOTPATCH_TABLE_OFFSET_FIELD.get(pe.machine, 0xF0)
    sym = "__load_config_used" if pe.machine is Machine.X86 else "_load_config_used"
    fix = (f"define {sym} as an IMAGE_LOAD_CONFIG_DIRECTORY with Size >= {need:#x} "
           f"({'0x98 on x86' if pe.machine is Machine.X86 else '0xF4 on x64/ARM64'}) and relink")
    lc = pe.load_config
    if lc is None:
        yield finding(
            "HP107", "the intermediate has no load configuration directory",
            kind="image", evidence={"required_size": hx(need), "field_offset": hx(field)},
            explanation=["the intermediate has no load configuration directory",
                         "the hot-patch table is found through its HotPatchTableOffset field",
                         f"to fix: {fix}"],
        )
    elif not lc.covers_hotpatch_field:
        yield finding(
            "HP107", f"the load configuration's Size {lc.size:#x} is too small to hold "
                     f"HotPatchTableOffset (needs >= {need:#x})",
            kind="image",
            evidence={"size": hx(lc.size), "required_size": hx(need), "field_offset": hx(field)},
            explanation=[f"IMAGE_LOAD_CONFIG_DIRECTORY.Size is {lc.size:#x}; HotPatchTableOffset is at "
                         f"{field:#x}, so Size must be at least {need:#x}", f"to fix: {fix}"],
        )
