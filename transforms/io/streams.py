"""Opening input files for streaming: plain, gzip and zstd, with every record before the damage.

Compressed streams go through ``_StreamReader`` rather than Beam's ``CompressedFile``:
it raises on a truncated stream where Beam's reader reports a silent EOF, and it
hands out every complete record before the damage.  Bytes between members that
start no gzip member or zstd frame are skipped up to the next magic number and
listed by ``junk_of`` (a reader reports each run as one ``junk_bytes`` dead letter),
so members after junk are still read.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Callable
from typing import IO, Any, Protocol

import zstandard
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

COMPRESSED = (".gz", ".zst")
CHUNK = 1 << 20
# Small compressed reads: a corrupt block loses at most what this much input decodes to.
_COMPRESSED_CHUNK = 1 << 16
# Errors that mean the bytes are damaged.  Plain I/O errors (OSError) are not among
# them: a failed read of a good file must fail the bundle so the runner retries it,
# not dead-letter the rest of the file.  pyarrow reports some damage as OSError.
DAMAGE_ERRORS: tuple[type[Exception], ...] = (EOFError, ValueError, zlib.error, zstandard.ZstdError)
# gzip: ID1 ID2 and CM=8 (deflate); zstd: the frame magic number.
_GZIP_MAGIC = b"\x1f\x8b\x08"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class _Decompressor(Protocol):
    eof: bool
    unused_data: bytes

    def decompress(self, data: bytes) -> bytes: ...


class _StreamReader(io.RawIOBase):
    """Decompresses a gzip or zstd stream member by member; raises ``EOFError`` if it ends inside one.

    Each read hands out what the compressed bytes read so far decode to, so a reader
    keeps every record before the damage.  Python's ``GzipFile`` behind a buffer can
    drop the last good chunk when it raises, and ``zstandard``'s ``stream_reader``
    reports a cut frame as a silent EOF; this reader does neither.

    Args:
      raw: the compressed byte stream.
      new_member: returns a fresh decompressor for the next gzip member or zstd frame.
    """

    def __init__(self, raw: IO[bytes], new_member: Callable[[], _Decompressor], magic: bytes) -> None:
        super().__init__()
        self._raw = raw
        self._new_member = new_member
        self._magic = magic
        self._member = new_member()
        self._in_member = False
        self._buf = b""
        self._pos = 0
        self._offset = 0
        self._done = False
        self._carry = b""
        self._error: Exception | None = None
        # Bytes between members that start no member: [decompressed offset, byte count] per run.
        self.junk: list[list[int]] = []

    def _note_junk(self, n: int, at: int) -> None:
        if self.junk and self.junk[-1][0] == at:
            self.junk[-1][1] += n
        elif n:
            self.junk.append([at, n])

    def _to_member_start(self, data: bytes, at: int, last: bool) -> bytes:
        """``data`` from the next member's magic bytes on; what precedes them is junk."""
        i = data.find(self._magic)
        if i < 0:
            # The magic may straddle two reads: keep its possible beginning for the next one.
            keep = 0 if last else len(self._magic) - 1
            self._note_junk(len(data) - keep, at)
            self._carry = data[len(data) - keep :] if keep else b""
            return b""
        self._note_junk(i, at)
        return data[i:]

    def readable(self) -> bool:
        return True

    def _fill(self) -> None:
        while self._pos >= len(self._buf) and not self._done:
            if self._error is not None:
                raise self._error
            fresh = self._raw.read(_COMPRESSED_CHUNK)
            data, self._carry = self._carry + fresh, b""
            if not data:
                if self._in_member:
                    raise EOFError("compressed stream ended inside a member or frame")
                self._done = True
                return
            out: list[bytes] = []
            try:
                self._decode(data, out, last=not fresh)
            except DAMAGE_ERRORS as err:
                # Hand out what decoded before the damage first; raise on the next read.
                self._error = err
            self._buf, self._pos = b"".join(out), 0

    def _decode(self, data: bytes, out: list[bytes], last: bool) -> None:
        while data:
            if not self._in_member:
                data = self._to_member_start(data, self._offset + sum(map(len, out)), last)
                if not data:
                    return
                try:
                    out.append(self._member.decompress(data))
                except DAMAGE_ERRORS:
                    # Magic bytes inside junk, not a member: skip one byte and look again.
                    self._member = self._new_member()
                    self._note_junk(1, self._offset + sum(map(len, out)))
                    data = data[1:]
                    continue
            else:
                out.append(self._member.decompress(data))
            self._in_member = True
            if self._member.eof:
                data = self._member.unused_data
                self._member = self._new_member()
                self._in_member = False
            else:
                data = b""

    def readinto(self, buffer: Any) -> int:
        self._fill()
        n = min(len(buffer), len(self._buf) - self._pos)
        buffer[:n] = self._buf[self._pos : self._pos + n]
        self._pos += n
        self._offset += n
        return n

    def seekable(self) -> bool:
        # Forward only, which is what FastWARC needs to skip record bodies.
        return True

    def tell(self) -> int:
        return self._offset

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        target = offset + (self._offset if whence == io.SEEK_CUR else 0)
        if whence == io.SEEK_END or target < self._offset:
            raise io.UnsupportedOperation("a compressed stream only seeks forward")
        while self._offset < target:
            skipped = self.read(min(target - self._offset, CHUNK))
            if not skipped:
                break
        return self._offset

    def close(self) -> None:
        self._raw.close()
        super().close()


def _gzip_member() -> _Decompressor:
    # wbits=31: gzip header and trailer, CRC and length checked at the end of each member.
    return zlib.decompressobj(wbits=31)  # type: ignore[return-value]


def _zstd_frame() -> _Decompressor:
    return zstandard.ZstdDecompressor().decompressobj()  # type: ignore[return-value]


def open_stream(path: str) -> IO[bytes]:
    """Opens ``path`` (local or ``gs://``) for streaming, decompressing ``.gz`` and ``.zst``.

    Args:
      path: the file.
    """
    raw = FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
    if path.endswith(".gz"):
        return io.BufferedReader(_StreamReader(raw, _gzip_member, _GZIP_MAGIC), buffer_size=CHUNK)
    if path.endswith(".zst"):
        return io.BufferedReader(_StreamReader(raw, _zstd_frame, _ZSTD_MAGIC), buffer_size=CHUNK)
    return raw


def junk_of(stream: IO[bytes]) -> list[list[int]]:
    """``[decompressed offset, bytes]`` of the junk a compressed stream skipped between members."""
    raw = getattr(stream, "raw", None)
    return raw.junk if isinstance(raw, _StreamReader) else []
