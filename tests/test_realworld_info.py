"""``pehp info --json`` agrees with pefile and with llvm-readobj-22 on real images: every
DLL of two msvc-runtime releases and numpy's two large images of two releases.

Compared (tools/infocheck.py): machine, image base, entry point, sections (name, RVA,
virtual size, raw size, characteristics), exports (ordinal, name, RVA, forwarder),
imports (DLL, name or ordinal, IAT slot, delayed), load config (Size, GuardFlags,
HotPatchTableOffset) and the CodeView GUID/age.
"""

from __future__ import annotations

import infocheck
import pytest
from conftest import IN_CI, _corpus

pytestmark = pytest.mark.network

NUMPY_IMAGES = ("_multiarray_umath*.pyd", "libscipy_openblas64_*.dll")


@pytest.fixture(scope="module")
def realworld_images(msvc_pair):
    import corpus

    images = [p for d in msvc_pair for p in sorted(d.glob("*.dll"))]
    for v in corpus.NUMPY_VERSIONS:
        for pattern in NUMPY_IMAGES:
            images.append(_corpus(lambda ver, pat=pattern: corpus.numpy_image(ver, pat), v))
    return images


@pytest.fixture(scope="module")
def readobj():
    if not infocheck.have_readobj():
        if IN_CI:
            raise RuntimeError("llvm-readobj-22 is missing (make toolchain)")
        pytest.skip("llvm-readobj-22 is not installed")


def test_info_json_agrees_with_pefile_and_llvm_readobj(realworld_images, readobj):
    assert len(realworld_images) == 2 * 12 + 4
    problems = {}
    seen = {"exports": 0, "imports": 0, "load_config": 0, "codeview": 0}
    for path in realworld_images:
        doc = infocheck.pehp_info_json(path)
        ours = infocheck.pehp_view(doc)
        for who, theirs in (("pefile", infocheck.pefile_view(path)), ("llvm-readobj", infocheck.readobj_view(path))):
            diffs = infocheck.differences(ours, theirs, who)
            if diffs:
                problems[f"{path.name} ({who})"] = diffs
        for key in seen:
            seen[key] += bool(ours[key])
    assert problems == {}
    # The comparison covered real content, not empty views.
    assert seen["exports"] == seen["imports"] == len(realworld_images)
    assert seen["load_config"] >= 26 and seen["codeview"] >= 24  # OpenBLAS (MinGW) has neither


def test_comparison_notices_a_difference(realworld_images, readobj):
    """A view that lost one export, moved a section or changed the age is reported."""
    path = realworld_images[0]
    ours = infocheck.pehp_view(infocheck.pehp_info_json(path))
    theirs = infocheck.readobj_view(path)
    assert infocheck.differences(ours, theirs, "llvm-readobj") == []
    broken = dict(ours, exports=ours["exports"][1:])
    name, rva, *rest = ours["sections"][0]
    broken["sections"] = [(name, rva + 0x1000, *rest), *ours["sections"][1:]]
    broken["codeview"] = (ours["codeview"][0], ours["codeview"][1] + 1)
    diffs = infocheck.differences(broken, theirs, "llvm-readobj")
    assert [d.split(":")[0] for d in diffs] == ["sections", "exports", "codeview"]
