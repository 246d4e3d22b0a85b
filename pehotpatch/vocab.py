"""The words the stages share: what happened to a function, how bad a finding is, the
verdict, what kind of reference an instruction makes, and which build is meant.

String vocabularies are :class:`enum.StrEnum`: a member equals its value (``Severity.ERROR
== "error"``), hashes like it, formats and prints as it (``repr`` included) and is written
to JSON as it, so documents, messages and comparisons with plain strings are unchanged.
Nothing here imports from the package.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum


class _Word(StrEnum):
    def __repr__(self) -> str:
        return repr(self.value)


class FunctionStatus(_Word):
    """What the diff found for a pair of functions."""

    UNCHANGED = "unchanged"
    CHANGED = "changed"
    THROUGH_DATA = "changed-through-data"  # same code, read-only data it reads changed
    PROLOGUE_ONLY = "prologue-only"  # differs only by the hot-patch no-op at the entry
    PADDING_ONLY = "padding-only"  # differs only by alignment no-ops inside the body


class Severity(_Word):
    """How much a finding weighs: an error rejects the pair unless waived."""

    ERROR = "error"
    WARNING = "warning"
    NOTE = "note"


class Verdict(_Word):
    """The check's decision for a pair of images."""

    PATCHABLE = "patchable"
    REJECTED = "rejected"


class RefKind(_Word):
    """What an instruction does with an address outside its function.

    ``call`` and ``jump`` are direct (a jump leaving the function, tail calls included);
    ``data`` takes or reads an address; ``indirect_call`` / ``indirect_jump`` go through
    a memory slot (an IAT entry), the target being the slot."""

    CALL = "call"
    JUMP = "jump"
    DATA = "data"
    INDIRECT_CALL = "indirect_call"
    INDIRECT_JUMP = "indirect_jump"


class Side(IntEnum):
    """Which build of a pair: the deployed base or the rebuilt intermediate.  The value
    indexes pairs such as ``DiffResult.codes``."""

    BASE = 0
    NEW = 1
