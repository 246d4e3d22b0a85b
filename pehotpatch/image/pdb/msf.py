"""MSF 7.0, the multi-stream container a PDB is stored in.

Layout: a superblock in block 0 (magic, block size, block count, directory size, block
map address); the block map lists the blocks of the stream directory; the directory
holds the stream count, every stream's size and every stream's block list.
"""

from __future__ import annotations

import struct
from array import array
from dataclasses import dataclass

from pehotpatch.errors import FormatError, InputError, read_capped

MSF7_MAGIC = b"Microsoft C/C++ MSF 7.00\r\n\x1aDS\x00\x00\x00"
PDB2_MAGIC = b"Microsoft C/C++ program database 2.00"
MSFZ_MAGIC = b"Microsoft MSFZ Container"
NIL_STREAM_SIZE = 0xFFFFFFFF
VALID_BLOCK_SIZES = (512, 1024, 2048, 4096, 8192, 16384, 32768)
MAX_PDB_SIZE = 4 * 1024**3  # what MSF 7.0 addresses with 4 KiB blocks; the file is read whole

_SUPER = struct.Struct("<6I")


@dataclass(frozen=True, slots=True)
class SuperBlock:
    block_size: int
    free_block_map_block: int
    num_blocks: int
    num_directory_bytes: int
    unknown: int
    block_map_addr: int


class Msf:
    """Random access to the streams of an MSF 7.0 file held in memory."""

    def __init__(self, data: bytes, path: str | None = None) -> None:
        self.path = path
        self._data = data
        self._view = memoryview(data)
        self.superblock = self._parse_superblock()
        self.stream_sizes: list[int] = []
        self._stream_blocks: list[array] = []
        self._parse_directory()

    @classmethod
    def open(cls, path: str) -> Msf:
        try:
            data = read_capped(path, MAX_PDB_SIZE, "PDB")
        except OSError as e:
            raise InputError(f"cannot read PDB: {e.strerror or e}", path) from None
        return cls(data, path)

    # -- parsing --
    def _err(self, msg: str) -> FormatError:
        return FormatError(msg, self.path)

    def _parse_superblock(self) -> SuperBlock:
        data = self._data
        if not data.startswith(MSF7_MAGIC):
            if data.startswith(PDB2_MAGIC):
                raise InputError("PDB 2.0 (pre-MSF 7.0) files are not supported", self.path)
            if data.startswith(MSFZ_MAGIC):
                raise InputError("compressed MSFZ PDB files are not supported", self.path)
            raise InputError("not a PDB file (MSF 7.0 signature missing)", self.path)
        if len(data) < len(MSF7_MAGIC) + _SUPER.size:
            raise self._err("MSF superblock truncated")
        sb = SuperBlock(*_SUPER.unpack_from(data, len(MSF7_MAGIC)))
        if sb.block_size not in VALID_BLOCK_SIZES:
            raise self._err(f"MSF block size {sb.block_size} is not a supported value")
        if sb.num_blocks == 0 or sb.num_blocks > len(data) // sb.block_size + 1:
            raise self._err(
                f"MSF block count {sb.num_blocks} does not fit a file of {len(data)} bytes"
            )
        return sb

    def _check_block(self, b: int, what: str) -> None:
        sb = self.superblock
        if b >= sb.num_blocks or (b + 1) * sb.block_size > len(self._data):
            raise self._err(f"{what}: block {b} lies outside the file")

    def _parse_directory(self) -> None:
        sb = self.superblock
        bs = sb.block_size
        ndir = sb.num_directory_bytes
        if ndir < 4 or ndir > len(self._data):
            raise self._err(f"MSF stream directory size {ndir} is invalid")
        nblocks = -(-ndir // bs)
        self._check_block(sb.block_map_addr, "MSF block map")
        map_off = sb.block_map_addr * bs
        if map_off + 4 * nblocks > len(self._data):
            raise self._err("MSF block map runs past the end of the file")
        dir_blocks = array("I")
        dir_blocks.frombytes(self._data[map_off : map_off + 4 * nblocks])
        if dir_blocks.itemsize != 4:  # pragma: no cover - exotic platforms
            raise self._err("unsupported platform integer size")
        for b in dir_blocks:
            self._check_block(b, "MSF stream directory")
        directory = self._gather(dir_blocks, ndir)
        n = struct.unpack_from("<I", directory, 0)[0]
        if 4 + 4 * n > ndir:
            raise self._err(f"MSF directory: {n} streams do not fit in {ndir} bytes")
        sizes = struct.unpack_from(f"<{n}I", directory, 4)
        pos = 4 + 4 * n
        blocks_per = []
        total = 0
        for size in sizes:
            cnt = 0 if size == NIL_STREAM_SIZE else -(-size // bs)
            blocks_per.append(cnt)
            total += cnt
        if pos + 4 * total > ndir:
            raise self._err("MSF directory: stream block lists run past the end of the directory")
        limit = min(sb.num_blocks, len(self._data) // bs)
        if total > limit:
            # Each block belongs to one stream: more would repeat blocks, and reading the
            # streams could then take many times the file's size in memory.
            raise self._err(f"MSF directory: streams claim {total} blocks, the file has {limit}")
        all_blocks = array("I")
        all_blocks.frombytes(directory[pos : pos + 4 * total])
        if total and max(all_blocks) >= limit:
            bad = next(b for b in all_blocks if b >= limit)
            raise self._err(f"MSF directory: a stream uses block {bad}, outside the file")
        i = 0
        for size, cnt in zip(sizes, blocks_per, strict=True):
            self.stream_sizes.append(0 if size == NIL_STREAM_SIZE else size)
            self._stream_blocks.append(all_blocks[i : i + cnt])
            i += cnt

    def _gather(self, blocks: array, size: int) -> bytes:
        """Concatenate ``blocks`` (contiguous runs copied in one slice), cut to ``size``."""
        bs = self.superblock.block_size
        view = self._view
        parts = []
        run_start = -1
        prev = -2
        for b in blocks:
            if b == prev + 1:
                prev = b
                continue
            if run_start >= 0:
                parts.append(view[run_start * bs : (prev + 1) * bs])
            run_start = prev = b
        if run_start >= 0:
            parts.append(view[run_start * bs : (prev + 1) * bs])
        if len(parts) == 1:
            return bytes(parts[0][:size])
        out = b"".join(parts)
        return out[:size] if len(out) != size else out

    # -- access --
    @property
    def block_size(self) -> int:
        return self.superblock.block_size

    @property
    def num_streams(self) -> int:
        return len(self.stream_sizes)

    def has_stream(self, index: int) -> bool:
        return 0 <= index < len(self.stream_sizes) and self.stream_sizes[index] > 0

    def stream_size(self, index: int) -> int:
        if not 0 <= index < len(self.stream_sizes):
            raise self._err(f"stream {index} does not exist (the PDB has {len(self.stream_sizes)})")
        return self.stream_sizes[index]

    def stream_blocks(self, index: int) -> list[int]:
        self.stream_size(index)
        return list(self._stream_blocks[index])

    def stream(self, index: int) -> bytes:
        """The contents of stream ``index``."""
        size = self.stream_size(index)
        if size == 0:
            return b""
        return self._gather(self._stream_blocks[index], size)
