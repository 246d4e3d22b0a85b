"""pehp: a secure hot-patch generator for Windows PE images.

The library API (:mod:`pehotpatch.api`) is re-exported here::

    import pehotpatch as pehp
    result = pehp.check_pair("base.dll", "intermediate.dll", objects="objs/",
                             functions_file="hotpatch_functions.txt")
    print(result.verdict)
"""

from pehotpatch.api import (  # noqa: E402
    FinalImage,
    check_diff,
    check_pair,
    check_tree,
    diff_loaded,
    diff_pair,
    emit_final,
    inspect_image,
    load_image,
    load_pair,
    plan_diff,
    plan_pair,
    report_pair,
    simulate,
    verify_final,
    write_report,
)
from pehotpatch.version import __version__

__all__ = ["__version__", "FinalImage", "check_diff", "check_pair", "check_tree", "diff_loaded", "diff_pair",
           "emit_final", "inspect_image", "load_image", "load_pair", "plan_diff", "plan_pair", "report_pair", "simulate", "verify_final",
           "write_report"]
