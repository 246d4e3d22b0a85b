"""What a user can tune about the check (below both the rules and :mod:`pehotpatch.check`)."""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass


@dataclass(frozen=True)
class CheckOptions:
    allow_new_imports: bool = False  # HP212 becomes a note (engines that resolve new imports)
    today: _dt.date | None = None  # for waiver expiry; default: the local date
