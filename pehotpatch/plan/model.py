"""The patch plan: every reference that leaves the patched code, and what the hot-patch
table does with it.  Typed, versioned, JSON-serialisable (schema ``pehp-plan`` v1).

RVAs named ``base_rva`` are in the base image, ``patch_rva`` / ``slot_rva`` in the patch
(intermediate) image.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

PLAN_SCHEMA = "pehp-plan"
PLAN_SCHEMA_VERSION = 1


def _hex(v: int) -> str:
    return f"{v:#x}"


@dataclass(frozen=True)
class ImageIdentity:
    path: str
    sha256: str
    machine: str
    timestamp: int  # FileHeader.TimeDateStamp
    checksum: int  # OptionalHeader.CheckSum as stored
    size_of_image: int


@dataclass(frozen=True)
class Forward:
    """A patched function: the base's entry is redirected to the patch's (FUNCTION)."""

    function: str
    base_rva: int
    patch_rva: int
    first_bytes: int  # the base function's first 4 bytes, little-endian (loader check and undo)


@dataclass(frozen=True)
class Backward:
    """An unpatched function that patched code calls or jumps to: the patch image's copy is
    redirected to the base's (INVERSE FUNCTION)."""

    function: str
    patch_rva: int
    base_rva: int
    first_bytes: int  # the patch copy's first 4 bytes
    referenced_by: tuple[str, ...]


@dataclass(frozen=True)
class DataBinding:
    """A pointer slot of the patch image bound to the base (INVERSE ABSOLUTE): a ``__ref_``
    slot to the base's variable, or a code pointer to the base's function."""

    slot: str
    slot_rva: int
    target: str  # what the slot points at (base name)
    base_rva: int
    read_by: tuple[str, ...]


@dataclass(frozen=True)
class ImportBinding:
    """An IAT slot patched code uses, filled from the base's IAT entry (INVERSE INDIRECT)."""

    name: str  # dll!function
    patch_slot_rva: int
    base_slot_rva: int
    used_by: tuple[str, ...]


@dataclass(frozen=True)
class OwnImport:
    """An import the base lacks: resolved by the patch image's own IAT (no record)."""

    name: str
    patch_slot_rva: int
    used_by: tuple[str, ...]


@dataclass(frozen=True)
class CallTarget:
    """A patched function that is a valid CFG call target in base: valid in the patch image
    too (INVERSE CALL_TARGET)."""

    function: str
    patch_rva: int
    base_rva: int


@dataclass(frozen=True)
class NewGlobal:
    """A global the base does not have: it stays in the patch image."""

    name: str
    patch_rva: int
    slot: str | None  # the __ref_ slot patched code reaches it through (left as is)


@dataclass(frozen=True)
class NewFunction:
    """A function the base does not have that patched code can run: stays in the patch image."""

    name: str
    patch_rva: int
    reached_by: str | None
    reached_how: str | None


@dataclass(frozen=True)
class Refusal:
    """A reference the table cannot express: the plan is not applicable while any remain."""

    reference: str  # where: "telemetry_record+0x1c"
    target: str  # what it refers to
    reason: str


@dataclass
class PatchPlan:
    base: ImageIdentity
    intermediate: ImageIdentity
    sequence: int
    forward: list[Forward] = field(default_factory=list)
    backward: list[Backward] = field(default_factory=list)
    data: list[DataBinding] = field(default_factory=list)
    imports: list[ImportBinding] = field(default_factory=list)
    own_imports: list[OwnImport] = field(default_factory=list)
    call_targets: list[CallTarget] = field(default_factory=list)
    new_globals: list[NewGlobal] = field(default_factory=list)
    new_functions: list[NewFunction] = field(default_factory=list)
    refusals: list[Refusal] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def applicable(self) -> bool:
        return not self.refusals

    def counts(self) -> dict[str, int]:
        return {f.name: len(getattr(self, f.name)) for f in fields(self)
                if isinstance(getattr(self, f.name), list) and f.name != "notes"}

    # ---- JSON ----------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        from pehotpatch.version import __version__

        def conv(obj: Any) -> Any:
            d = asdict(obj)
            for k, v in list(d.items()):
                if isinstance(v, int) and not isinstance(v, bool) and (k.endswith("rva") or k in ("first_bytes",)):
                    d[k] = _hex(v)
                elif isinstance(v, tuple):
                    d[k] = list(v)
            return d

        doc: dict[str, Any] = {
            "schema": PLAN_SCHEMA,
            "schema_version": PLAN_SCHEMA_VERSION,
            "tool": {"name": "pehp", "version": __version__},
            "applicable": self.applicable,
            "sequence": self.sequence,
            "base": asdict(self.base),
            "intermediate": asdict(self.intermediate),
            "summary": self.counts(),
        }
        for name in ("forward", "backward", "data", "imports", "own_imports", "call_targets",
                     "new_globals", "new_functions", "refusals"):
            doc[name] = [conv(x) for x in getattr(self, name)]
        doc["notes"] = list(self.notes)
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> PatchPlan:
        if doc.get("schema") != PLAN_SCHEMA or doc.get("schema_version") != PLAN_SCHEMA_VERSION:
            raise ValueError(f"not a {PLAN_SCHEMA} v{PLAN_SCHEMA_VERSION} document")
        kinds: dict[str, type] = {"forward": Forward, "backward": Backward, "data": DataBinding,
                                  "imports": ImportBinding, "own_imports": OwnImport,
                                  "call_targets": CallTarget, "new_globals": NewGlobal,
                                  "new_functions": NewFunction, "refusals": Refusal}

        def back(kind: type, d: dict[str, Any]) -> Any:
            args = {}
            for f in fields(kind):
                v = d[f.name]
                if isinstance(v, str) and (f.name.endswith("rva") or f.name == "first_bytes"):
                    v = int(v, 16)
                elif isinstance(v, list):
                    v = tuple(v)
                args[f.name] = v
            return kind(**args)

        plan = cls(ImageIdentity(**doc["base"]), ImageIdentity(**doc["intermediate"]), doc["sequence"])
        for name, kind in kinds.items():
            setattr(plan, name, [back(kind, d) for d in doc.get(name, [])])
        plan.notes = list(doc.get("notes", []))
        return plan
