"""HP0xx: findings about the check itself (the waivers it was given)."""

from __future__ import annotations

from pehotpatch.rules import ERROR, define

define(
    "HP001", "InvalidWaiver", "invalid waiver", ERROR,
    """A waiver in the waivers file cannot be used: it has no justification, its expiry
    date has passed or is not a date, or it names a rule that does not exist or cannot
    be waived. The waiver is ignored, so the finding it meant to waive still counts, and
    the bad waiver is itself an error so that a stale or careless waiver fails the gate
    instead of silently hiding a problem.""",
)
