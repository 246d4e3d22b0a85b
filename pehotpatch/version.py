"""The version of pehp (one place; the package and every document it writes use it)."""

__version__ = "0.1.0"
