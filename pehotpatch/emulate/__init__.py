"""Emulating a hot-patch: a base image running in unicorn, the final image's table
applied to it the way the Windows loader does, and calls through the base's exports
before and after (``pehp simulate``; docs/SIMULATE.md)."""
