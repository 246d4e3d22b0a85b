"""Build crafted (hostile) inputs in memory from the committed samples, for the limit tests.

Nothing here is committed as a blob: every test derives its input from a sample image,
PDB or object by patching fields with ``struct``.
"""

from __future__ import annotations

import os
import resource
import signal
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PEHP = [sys.executable, "-c", "import sys; from pehotpatch._entry import main; sys.exit(main())"]

# The same, with an audit hook logging every open, rename, link, unlink and chmod (one
# JSON line each) to the file named by PEHP_AUDIT_LOG: what the tests check "read-only"
# and "renamed into place only after re-reading" against.
_AUDITED = """
import json, os, sys
log = open(os.environ["PEHP_AUDIT_LOG"], "a", buffering=1)
EVENTS = {"open", "os.rename", "os.link", "os.remove", "os.chmod", "os.truncate", "os.utime"}
def hook(event, args):
    if event not in EVENTS:
        return
    out = []
    for a in args:
        if isinstance(a, (str, bytes, os.PathLike)):
            a = os.fsdecode(a)
        elif not isinstance(a, (int, type(None))):
            a = str(a)
        out.append(a)
    log.write(json.dumps([os.getpid(), event, out]) + "\\n")
sys.addaudithook(hook)
from pehotpatch._entry import main
sys.exit(main())
"""
PEHP_AUDITED = [sys.executable, "-c", _AUDITED]

# Every crafted-input run gets these limits: a regression fails instead of hanging CI.
LIMIT_AS = 2 * 1024**3
LIMIT_SECONDS = 60


# ---- PE ---------------------------------------------------------------------------------
@dataclass
class PeLayout:
    lfanew: int
    opt: int
    opt_size: int
    nsec: int
    sec_table: int
    plus: bool

    @property
    def dirs(self) -> int:
        return self.opt + (112 if self.plus else 96)

    def sec(self, i: int) -> int:
        return self.sec_table + 40 * i


def pe_layout(data: bytes | bytearray) -> PeLayout:
    (lfanew,) = struct.unpack_from("<I", data, 0x3C)
    nsec, = struct.unpack_from("<H", data, lfanew + 6)
    opt_size, = struct.unpack_from("<H", data, lfanew + 20)
    opt = lfanew + 24
    plus = struct.unpack_from("<H", data, opt)[0] == 0x20B
    return PeLayout(lfanew, opt, opt_size, nsec, opt + opt_size, plus)


def sections(data: bytes | bytearray) -> list[tuple[str, int, int, int, int]]:
    """(name, rva, virtual size, raw offset, raw size) per section header."""
    lay = pe_layout(data)
    out = []
    for i in range(lay.nsec):
        name, vsize, rva, rsize, roff = struct.unpack_from("<8sIIII", data, lay.sec(i))
        out.append((name.rstrip(b"\0").decode(), rva, vsize, roff, rsize))
    return out


def section_index(data: bytes | bytearray, name: str) -> int:
    return [s[0] for s in sections(data)].index(name)


def directory(data: bytes | bytearray, index: int) -> tuple[int, int]:
    return struct.unpack_from("<II", data, pe_layout(data).dirs + 8 * index)


def set_directory(data: bytearray, index: int, rva: int, size: int) -> None:
    struct.pack_into("<II", data, pe_layout(data).dirs + 8 * index, rva, size)


def rva_to_offset(data: bytes | bytearray, rva: int) -> int:
    for _name, srva, vsize, roff, rsize in sections(data):
        if srva <= rva < srva + max(vsize, rsize):
            assert rva - srva < rsize, "RVA not backed by file data"
            return roff + rva - srva
    raise AssertionError(f"RVA {rva:#x} is in no section")


def add_section(data: bytes | bytearray, name: str, payload: bytes,
                characteristics: int = 0x40000040) -> tuple[bytearray, int]:
    """Append a section holding ``payload``; returns the new file and the section's RVA."""
    out = bytearray(data)
    lay = pe_layout(out)
    (sect_align, file_align) = struct.unpack_from("<II", out, lay.opt + 32)
    (size_of_headers,) = struct.unpack_from("<I", out, lay.opt + 60)
    assert lay.sec(lay.nsec + 1) <= size_of_headers, "no room for another section header"
    last = max(sections(out), key=lambda s: s[1])
    rva = -(-(last[1] + max(last[2], last[4])) // sect_align) * sect_align
    raw = -(-len(out) // file_align) * file_align
    size = -(-len(payload) // file_align) * file_align
    out.extend(b"\0" * (raw - len(out)))
    out.extend(payload.ljust(size, b"\0"))
    struct.pack_into("<8sIIIIIIHHI", out, lay.sec(lay.nsec), name.encode(), len(payload), rva,
                     size, raw, 0, 0, 0, 0, characteristics)
    struct.pack_into("<H", out, lay.lfanew + 6, lay.nsec + 1)
    struct.pack_into("<I", out, lay.opt + 56, -(-(rva + len(payload)) // sect_align) * sect_align)
    return out, rva


# ---- MSF / PDB --------------------------------------------------------------------------
MSF_MAGIC_LEN = 32


@dataclass
class MsfLayout:
    block_size: int
    num_blocks: int
    dir_bytes: int
    block_map: int
    dir_blocks: list[int]
    sizes: list[int]
    blocks: list[list[int]]


def msf_layout(data: bytes | bytearray) -> MsfLayout:
    bs, _fpm, nblocks, ndir, _u, bmap = struct.unpack_from("<6I", data, MSF_MAGIC_LEN)
    ndb = -(-ndir // bs)
    dir_blocks = list(struct.unpack_from(f"<{ndb}I", data, bmap * bs))
    directory = b"".join(bytes(data[b * bs:(b + 1) * bs]) for b in dir_blocks)[:ndir]
    (n,) = struct.unpack_from("<I", directory, 0)
    sizes = list(struct.unpack_from(f"<{n}I", directory, 4))
    pos = 4 + 4 * n
    blocks = []
    for s in sizes:
        cnt = 0 if s == 0xFFFFFFFF else -(-s // bs)
        blocks.append(list(struct.unpack_from(f"<{cnt}I", directory, pos)))
        pos += 4 * cnt
    return MsfLayout(bs, nblocks, ndir, bmap, dir_blocks, sizes, blocks)


def write_directory(data: bytearray, sizes: list[int], blocks: list[list[int]]) -> bytearray:
    """Store a new stream directory in fresh blocks at the end of the file."""
    lay = msf_layout(data)
    bs = lay.block_size
    directory = struct.pack("<I", len(sizes)) + struct.pack(f"<{len(sizes)}I", *sizes)
    for bl in blocks:
        directory += struct.pack(f"<{len(bl)}I", *bl)
    out = bytearray(data)
    first = len(out) // bs
    ndb = -(-len(directory) // bs)
    out.extend(directory.ljust(ndb * bs, b"\0"))
    bmap = first + ndb
    out.extend(struct.pack(f"<{ndb}I", *range(first, first + ndb)).ljust(bs, b"\0"))
    struct.pack_into("<6I", out, MSF_MAGIC_LEN, bs, 1, len(out) // bs, len(directory), 0, bmap)
    return out


def stream_offsets(data: bytes | bytearray, index: int) -> list[int]:
    """File offset of every byte of stream ``index`` (for patching inside a stream)."""
    lay = msf_layout(data)
    bs = lay.block_size
    offs: list[int] = []
    for b in lay.blocks[index]:
        offs.extend(range(b * bs, (b + 1) * bs))
    return offs[: lay.sizes[index]]


def stream(data: bytes | bytearray, index: int) -> bytes:
    return bytes(data[o] for o in stream_offsets(data, index))


def patch_stream(data: bytearray, index: int, pos: int, value: bytes) -> None:
    offs = stream_offsets(data, index)
    for k, byte in enumerate(value):
        data[offs[pos + k]] = byte


# ---- running the CLI under limits -------------------------------------------------------
@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    maxrss_kib: int


def _limits(fsize: int | None = None):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (LIMIT_AS, LIMIT_AS))
        resource.setrlimit(resource.RLIMIT_CPU, (LIMIT_SECONDS, LIMIT_SECONDS + 5))
        if fsize is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    return apply


def run_pehp(*args: str | os.PathLike[str], fsize: int | None = None, cwd: Path | None = None,
             timeout: float = LIMIT_SECONDS, audit: Path | None = None,
             wrap: tuple[str, ...] = ()) -> Run:
    """Run the `pehp` CLI in a child with an address-space cap, a CPU cap and a timeout;
    the child's own peak RSS comes from wait4.  ``fsize`` caps the size of any file the
    child writes (a full disk: writes fail with EFBIG); ``audit`` logs its file
    operations there; ``wrap`` is a command prefix (e.g. setpriv)."""
    import tempfile

    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "120", "PYTHONDONTWRITEBYTECODE": "1"}
    cmd = PEHP
    if audit is not None:
        env["PEHP_AUDIT_LOG"] = str(audit)
        cmd = PEHP_AUDITED
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.monotonic()
        proc = subprocess.Popen([*wrap, *cmd, *map(str, args)], stdout=out, stderr=err, cwd=cwd,
                                env=env, preexec_fn=_limits(fsize))
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() - t0 > timeout:
                proc.kill()
                proc.wait()
                raise TimeoutError(f"pehp {' '.join(map(str, args))} ran over {timeout} s")
            time.sleep(0.02)
        dt = time.monotonic() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return Run(proc.returncode, out.read().decode("utf-8", "replace"),
                   err.read().decode("utf-8", "replace"), dt, usage.ru_maxrss)
