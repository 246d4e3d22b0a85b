"""The typed results of ``pehp simulate``; every one turns into plain JSON with
:func:`to_json` (addresses as RVAs within an image, so the output is the same on every
run)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

# Fault kinds
FAULT_READ = "read"  # reading unmapped or unreadable memory
FAULT_WRITE = "write"  # writing unmapped or read-only memory
FAULT_FETCH = "fetch"  # executing unmapped or non-executable memory
FAULT_INSN = "instruction"  # an instruction the CPU refuses
FAULT_BUDGET = "budget"  # the instruction budget ran out (a call that runs away)
FAULT_IMPORT = "import"  # a call into an import that has no stub

# Finding kinds
F_REFUSED = "patch-refused"  # the loader would refuse the table (reason in the message)
F_WRONG_FUNCTION = "wrong-function"  # a FUNCTION record joins two different functions
F_PATCH_STATE = "patch-image-state"  # patched code touched a mutable global of the patch image
F_REF_UNBOUND = "ref-slot-unbound"  # a __ref_ slot still points into the patch image
F_MISSING_BACKWARD = "missing-backward"  # the patch image's copy of an unpatched function ran
F_FAULT = "fault"  # a call faulted or ran away after patching
F_MISMATCH = "result-mismatch"  # patched from the start, a call's result differs from the intermediate's
F_UNDO = "undo-incomplete"  # base memory differs from before patching after undo


@dataclass(frozen=True)
class Location:
    """Where an address is: the image's role (``base``, ``patch``...) and an RVA."""

    image: str | None
    rva: int | None
    where: str  # "function+0x12", "section+0x40", or a plain address for no image

    def text(self) -> str:
        return f"{self.image}:{self.where}" if self.image else self.where


@dataclass(frozen=True)
class Fault:
    kind: str
    pc: Location
    detail: str
    address: Location | None = None  # the memory accessed, for read/write/fetch faults

    def text(self) -> str:
        at = f" accessing {self.address.text()}" if self.address else ""
        return f"{self.kind} fault in {self.pc.text()}{at}: {self.detail}"


@dataclass(frozen=True)
class GlobalWrite:
    image: str
    section: str
    name: str | None  # the global written (from the symbol index), when known
    rva: int


@dataclass
class CallResult:
    value: int | None  # the return register (None: void function, or a fault)
    fault: Fault | None = None
    writes: list[GlobalWrite] = field(default_factory=list)
    # per buffer argument, in order: BLAKE2b-64 of its contents after the call (hex)
    buffers: list[str] = field(default_factory=list)

    def outcome(self) -> str:
        if self.fault is not None:
            return f"fault({self.fault.kind})"
        value = "-" if self.value is None else str(self.value)
        return value + (f" [{' '.join(self.buffers)}]" if self.buffers else "")


@dataclass
class CallRow:
    index: int
    call: str
    phase: str  # "before" (the base unpatched) or "after" (patched)
    base: CallResult
    patched: CallResult
    intermediate: CallResult


@dataclass(frozen=True)
class Finding:
    kind: str
    message: str
    call: int | None = None  # index into the call sequence, when a call showed it


@dataclass(frozen=True)
class Redirect:
    direction: str  # "forward" (base -> patch) or "backward" (patch copy -> base)
    function: str  # the redirected function's name (or RVA)
    site_rva: int
    target_rva: int
    image: str  # the image written to (base for forward, the patch for backward)


@dataclass
class PatchReport:
    final: str
    role: str  # patch, patch2
    sequence: int
    applied: bool
    records: dict[str, int] = field(default_factory=dict)  # record kind -> count
    redirects: list[Redirect] = field(default_factory=list)
    restored: list[str] = field(default_factory=list)  # superseded: back to the base's code
    refused: str | None = None


@dataclass
class UndoReport:
    identical: bool
    restored: int  # functions put back
    differences: list[int] = field(default_factory=list)  # base RVAs still different


@dataclass
class SimulationResult:
    machine: str
    base: str
    final: str
    patch_after: int
    calls: list[CallRow] = field(default_factory=list)
    patches: list[PatchReport] = field(default_factory=list)
    undo: UndoReport | None = None
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1


def to_json(result: SimulationResult) -> dict[str, Any]:
    out = asdict(result)
    out["ok"] = result.ok
    return out
