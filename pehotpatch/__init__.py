"""pehp: a secure hot-patch generator for Windows PE images.

The library API is importable without the CLI::

    from pehotpatch.image.pe import load_pe
    img = load_pe("base.dll")
"""

__version__ = "0.1.0"
