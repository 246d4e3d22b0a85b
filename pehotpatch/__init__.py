"""pehp: a secure hot-patch generator for Windows PE images.

The library API (:mod:`pehotpatch.api`) is re-exported here::

    import pehotpatch as pehp
    result = pehp.check_pair("base.dll", "intermediate.dll", objects="objs/",
                             functions_file="hotpatch_functions.txt")
    print(result.verdict)
"""

__version__ = "0.1.0"

from pehotpatch.api import (  # noqa: E402
    check_diff,
    check_pair,
    check_tree,
    diff_loaded,
    diff_pair,
    load_image,
    load_pair,
)

__all__ = ["__version__", "check_diff", "check_pair", "check_tree", "diff_loaded", "diff_pair",
           "load_image", "load_pair"]
