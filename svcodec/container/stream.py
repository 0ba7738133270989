"""Writing and reading .svc files (layout: format.py, spec: docs/FORMAT.md)."""

from __future__ import annotations

import bisect
import dataclasses
import os
import struct
from dataclasses import dataclass
from typing import Iterator, Sequence

from .. import fsutil
from ..errors import BitstreamError, InputError
from .format import (_GOP, END_MAGIC, GOP_HEADER_SIZE, INDEX_ENTRY_SIZE, MIN_FRAME_BYTES, TRAILER_SIZE,
                     AccessUnit, GopHeader, SequenceHeader, crc32, encode_access_unit,
                     encode_index_and_trailer, parse_access_unit, parse_gop_header, parse_index,
                     parse_sequence_header, parse_trailer, patch_frame_count)

# Largest possible file + sequence header (body length is a uint16).
_MAX_HEADER = 8 + 0xFFFF + 4
# How far back from the end a misplaced trailer is looked for (to tell appended data from a cut).
_TRAILING_SEARCH = 1 << 16
# Bytes read at a time while looking for the next intact GOP header after a damaged one.
_RESYNC_CHUNK = 1 << 20


@dataclass
class LostFrames:
    """Frames ``first`` .. ``end - 1`` that a recovering reader could not locate: behind a damaged
    GOP header, or (``cut``) missing because the file ends early."""

    first: int
    end: int
    reason: str
    cut: bool = False


def _os_message(path: str, e: OSError) -> str:
    if isinstance(e, FileNotFoundError):
        return f"{path}: no such file"
    if isinstance(e, IsADirectoryError):
        return f"{path}: is a directory, not an .svc file"
    if isinstance(e, PermissionError):
        return f"{path}: permission denied"
    return f"{path}: {e.strerror or e}"


class SvcWriter:
    """Writes an .svc file atomically.

    Data goes to a hidden temporary next to ``path`` (svcodec.fsutil: so the
    final step is a rename on one filesystem); ``path`` only appears,
    complete, when the with-block exits normally.  On an exception (signals
    included) the temporary is removed and an existing ``path`` is left
    untouched.  With ``overwrite=False`` an existing ``path`` is never
    replaced, not even one that appears while the file is being written.
    """

    def __init__(self, path, sequence: SequenceHeader, *, overwrite: bool = True):
        self.path = os.fspath(path)
        self._header = sequence.to_bytes()  # validates before touching the disk
        self.sequence = dataclasses.replace(sequence)  # a copy: close() sets its frame_count
        self._overwrite = overwrite
        if os.path.isdir(self.path):
            raise InputError(f"{self.path}: is a directory")
        if not overwrite and os.path.lexists(self.path):
            raise InputError(f"{self.path}: already exists (use -y to overwrite it)")
        self._f = None
        self._tmp = None
        try:
            self._tmp = fsutil.create_temp_file(self.path)
            self._f = open(self._tmp, "wb")
            self._f.write(self._header)
        except OSError as e:
            self.abort()
            raise InputError(_os_message(self.path, e)) from None
        except BaseException:  # a signal: nothing may stay behind
            self.abort()
            raise
        self._offset = len(self._header)
        self._entries: list[tuple[int, int]] = []  # (offset, first frame) per GOP
        self._frames = 0
        self._declared: int | None = None
        self.gops: list[GopHeader] = []

    def write_gop(self, access_units: Sequence[AccessUnit]) -> GopHeader:
        """Append one GOP; AU frame indices must continue the previous GOP's."""
        if self._f is None:
            raise ValueError("SvcWriter is closed")
        n = len(access_units)
        if not 1 <= n <= self.sequence.gop_size:
            raise ValueError(f"a GOP holds 1..{self.sequence.gop_size} access units, got {n}")
        data = b"".join(encode_access_unit(au, self._frames + j, j == 0)
                        for j, au in enumerate(access_units))
        gop = GopHeader(len(self.gops), self._frames, n, len(data))
        blob = gop.to_bytes() + data
        self._f.write(blob)
        self._entries.append((self._offset, self._frames))
        self._offset += len(blob)
        self._frames += n
        self.gops.append(gop)
        return gop

    @property
    def frames_written(self) -> int:
        return self._frames

    @property
    def bytes_written(self) -> int:
        return self._offset

    def set_frame_count(self, n: int) -> None:
        """Declare the total frame count; close() checks it against the frames written.

        The header's frame_count is always patched to the true count at
        close, so calling this is optional (it only adds a consistency check).
        """
        self._declared = n

    def close(self) -> None:
        """Finish the file (index, trailer, final header) and move it onto ``path``."""
        if self._f is None:
            return
        try:
            if not self.gops:
                raise ValueError("no GOP was written; an .svc file holds at least one frame")
            if self._declared is not None and self._declared != self._frames:
                raise ValueError(f"set_frame_count({self._declared}) but {self._frames} frames were written")
            self._f.write(encode_index_and_trailer(self._entries, self._offset))
            # Streaming input: the frame count is only known now, so patch it
            # in place (same length, new CRC).
            self._f.seek(0)
            self._f.write(patch_frame_count(self._header, self._frames))
            self._f.flush()
            os.fsync(self._f.fileno())  # data on disk before the rename makes it visible
            self._f.close()
            self._f = None
            with fsutil.signals_deferred():
                fsutil.publish(self._tmp, self.path, self._overwrite)
        except BaseException:
            self.abort()
            raise
        self.sequence.frame_count = self._frames

    def abort(self) -> None:
        """Discard everything written; ``path`` is not touched."""
        if self._f is not None:
            self._f.close()
            self._f = None
        if self._tmp is not None:
            fsutil.discard(self._tmp)

    def __enter__(self) -> "SvcWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False


class SvcReader:
    """Random access to an .svc file.

    Opening validates magic, version, sequence header, trailer, index and
    every GOP header, so ``sequence`` and ``gops`` can be trusted; access-unit
    CRCs are checked as GOPs are read.  The file is reopened for each read,
    so a reader holds no OS handle between calls.

    ``recover=True`` opens a damaged or cut file instead of refusing it: only
    the sequence header must be intact.  GOPs are located through the index
    when it is intact, otherwise by walking GOP headers from the start (and,
    past a damaged header, by searching for the next intact one); ``gops``
    then lists the GOPs found, in frame order, and ``lost`` the frame ranges
    that could not be located (``cut`` ones: the file ends before them).
    """

    def __init__(self, path, *, recover: bool = False):
        self.path = os.fspath(path)
        self.lost: list[LostFrames] = []
        if os.path.isdir(self.path):
            raise InputError(f"{self.path}: is a directory, not an .svc file")
        try:
            with open(self.path, "rb") as f:
                (self._scan if recover else self._load)(f)
        except OSError as e:
            raise InputError(_os_message(self.path, e)) from None
        except BitstreamError as e:
            raise BitstreamError(f"{self.path}: {e}") from None
        self._overhead: int | None = None

    def _read(self, f, offset: int, n: int, what: str) -> bytes:
        f.seek(offset)
        b = f.read(n)
        if len(b) != n:  # only if the file shrank since it was measured
            raise BitstreamError(f"{what}: file is truncated")
        return b

    def _load(self, f) -> None:
        size = self.file_size = os.fstat(f.fileno()).st_size
        self.sequence, header_end, self.version = parse_sequence_header(
            f.read(min(size, _MAX_HEADER)), size)
        # Limits first (docs/FORMAT.md section 12): the header's numbers are claims until the
        # file's own size backs them.
        if self.sequence.frame_count * MIN_FRAME_BYTES > size - header_end:
            raise BitstreamError(f"sequence header claims {self.sequence.frame_count} frames, more than "
                                 f"{size} bytes can hold (corrupt or truncated stream)")
        if size < header_end + TRAILER_SIZE:
            raise BitstreamError("file is truncated: no end-of-stream trailer")
        trailer = self._read(f, size - TRAILER_SIZE, TRAILER_SIZE, "trailer")
        try:
            index_offset = parse_trailer(trailer, size, header_end)
            (count,) = struct.unpack("<I", self._read(f, index_offset, 4, "index"))
            # Check the claimed length before reading it: a corrupt count must
            # not make us allocate gigabytes.
            index_len = size - TRAILER_SIZE - index_offset
            if index_len != 4 + 12 * count:
                raise BitstreamError(f"index: {count} entries do not fit between offset "
                                     f"{index_offset} and the trailer (corrupt or truncated stream)")
            entries = parse_index(self._read(f, index_offset, index_len, "index"), trailer)
        except BitstreamError:
            self._trailing_data(f, size, header_end)  # a better message if the end was moved
            raise
        if not entries:
            raise BitstreamError("index lists no GOP (an .svc stream holds at least one frame)")
        # GOPs must tile [header_end, index_offset) exactly, in index order,
        # with contiguous frame numbers; then no byte is unaccounted for.
        self.gops: list[GopHeader] = []
        self.gop_offsets: list[int] = []
        pos, frame = header_end, 0
        for k, (offset, first_frame) in enumerate(entries):
            if offset != pos or first_frame != frame:
                raise BitstreamError(f"index entry {k}: offset {offset} / first frame {first_frame}, "
                                     f"expected {pos} / {frame} (corrupt stream)")
            if offset + GOP_HEADER_SIZE > index_offset:
                raise BitstreamError(f"GOP {k} header: overlaps the index (corrupt stream)")
            gop = parse_gop_header(self._read(f, offset, GOP_HEADER_SIZE, f"GOP {k} header"), k)
            if gop.first_frame != frame or not 1 <= gop.frame_count <= self.sequence.gop_size:
                raise BitstreamError(f"GOP {k} header: first frame {gop.first_frame}, {gop.frame_count} "
                                     f"frames (expected first frame {frame}, 1..{self.sequence.gop_size} frames)")
            pos = offset + GOP_HEADER_SIZE + gop.data_length
            if pos > index_offset:
                raise BitstreamError(f"GOP {k}: data runs past the index (corrupt or truncated stream)")
            frame += gop.frame_count
            self.gops.append(gop)
            self.gop_offsets.append(offset)
        if pos != index_offset:
            raise BitstreamError(f"{index_offset - pos} unindexed bytes before the index (corrupt stream)")
        if frame != self.sequence.frame_count:
            raise BitstreamError(f"sequence header says {self.sequence.frame_count} frames, "
                                 f"the GOPs hold {frame} (corrupt stream)")

    # ---------------------------------------------------------------- recovery

    def _scan(self, f) -> None:
        size = self.file_size = os.fstat(f.fileno()).st_size
        self.sequence, header_end, self.version = parse_sequence_header(
            f.read(min(size, _MAX_HEADER)), size)
        self.gops, self.gop_offsets = [], []
        index = self._intact_index(f, size, header_end)
        if index is not None:
            self._scan_indexed(f, *index)
        else:
            self._scan_sequential(f, size, header_end)

    def _intact_index(self, f, size: int, header_end: int) -> tuple[list[tuple[int, int]], int] | None:
        """(entries, index offset) if the trailer and index are intact and consistent with the
        header, else None (damaged, or the file is cut)."""
        total, gop_size = self.sequence.frame_count, self.sequence.gop_size
        try:
            if size < header_end + TRAILER_SIZE:
                return None
            trailer = self._read(f, size - TRAILER_SIZE, TRAILER_SIZE, "trailer")
            index_offset = parse_trailer(trailer, size, header_end)
            index_len = size - TRAILER_SIZE - index_offset
            (count,) = struct.unpack("<I", self._read(f, index_offset, 4, "index"))
            if index_len != 4 + INDEX_ENTRY_SIZE * count:
                return None
            entries = parse_index(self._read(f, index_offset, index_len, "index"), trailer)
        except BitstreamError:
            return None
        bounds = [*entries, (index_offset, total)]
        if not entries or entries[0] != (header_end, 0):
            return None
        for (o0, f0), (o1, f1) in zip(bounds, bounds[1:]):
            # Every GOP holds 1..gop_size frames in at least their minimum size: an index that
            # says otherwise is not trusted (it must not make the decoder conceal millions of frames).
            if not (0 < f1 - f0 <= gop_size and o1 - o0 >= GOP_HEADER_SIZE + MIN_FRAME_BYTES * (f1 - f0)):
                return None
        return entries, index_offset

    def _scan_indexed(self, f, entries: list[tuple[int, int]], index_offset: int) -> None:
        bounds = [*entries, (index_offset, self.sequence.frame_count)]
        for k, ((offset, first), (next_offset, next_first)) in enumerate(zip(bounds, bounds[1:])):
            try:
                gop = parse_gop_header(self._read(f, offset, GOP_HEADER_SIZE, f"GOP {k} header"), k)
                if (gop.first_frame, gop.frame_count, offset + GOP_HEADER_SIZE + gop.data_length) != \
                        (first, next_first - first, next_offset):
                    raise BitstreamError(f"GOP {k} header: disagrees with the index (corrupt stream)")
            except BitstreamError as e:
                self.lost.append(LostFrames(first, next_first, str(e)))
                continue
            self.gops.append(gop)
            self.gop_offsets.append(offset)

    def _scan_sequential(self, f, size: int, header_end: int) -> None:
        total, gop_size = self.sequence.frame_count, self.sequence.gop_size
        pos, k, frame = header_end, 0, 0
        while frame < total:
            if pos + GOP_HEADER_SIZE > size:
                self.lost.append(LostFrames(frame, total, f"the file ends at byte {size}, before GOP {k} "
                                            "(cut file)", cut=True))
                return
            try:
                gop = parse_gop_header(self._read(f, pos, GOP_HEADER_SIZE, f"GOP {k} header"), k)
                # a GOP's data holds at least its frames' minimum size: a header that says otherwise
                # must not make the decoder conceal thousands of frames for 18 bytes
                if gop.first_frame != frame or not 1 <= gop.frame_count <= min(gop_size, total - frame) \
                        or gop.data_length < MIN_FRAME_BYTES * gop.frame_count:
                    raise BitstreamError(f"GOP {k} header: first frame {gop.first_frame}, {gop.frame_count} "
                                         f"frames in {gop.data_length} bytes (corrupt stream)")
            except BitstreamError as e:
                found = self._resync(f, pos + 1, size, k, frame)
                if found is None:
                    self.lost.append(LostFrames(frame, total, f"{e}; no intact GOP after byte {pos} "
                                                "(cut or damaged file)", cut=True))
                    return
                pos, gop = found
                self.lost.append(LostFrames(frame, gop.first_frame, str(e)))
                k, frame = gop.index, gop.first_frame
            end = pos + GOP_HEADER_SIZE + gop.data_length
            if end > size:
                self.lost.append(LostFrames(frame, total, f"the file ends at byte {size}, inside GOP {k} "
                                            "(cut file)", cut=True))
                return
            self.gops.append(gop)
            self.gop_offsets.append(pos)
            pos, k, frame = end, k + 1, frame + gop.frame_count

    def _resync(self, f, start: int, size: int, k: int, frame: int) -> tuple[int, GopHeader] | None:
        """The first intact GOP header at or after byte ``start`` that can follow GOP ``k - 1``
        (ending at frame ``frame``): later index, later first frame, no more frames than the
        skipped bytes can hold. None if there is none."""
        total, gop_size = self.sequence.frame_count, self.sequence.gop_size
        step, damaged_at = _RESYNC_CHUNK, start - 1
        while start + GOP_HEADER_SIZE <= size:
            buf = self._read(f, start, min(step + GOP_HEADER_SIZE - 1, size - start), "GOP header search")
            for i in range(len(buf) - GOP_HEADER_SIZE + 1):
                index, first, count, length = _GOP.unpack_from(buf, i)
                if not (k < index and frame < first and 1 <= count <= min(gop_size, total - first)
                        and length >= MIN_FRAME_BYTES * count
                        and (first - frame) * MIN_FRAME_BYTES <= start + i - damaged_at):
                    continue
                (stored,) = struct.unpack_from("<I", buf, i + _GOP.size)
                if crc32(buf[i:i + _GOP.size]) == stored:
                    return start + i, GopHeader(index, first, count, length)
            start += step
        return None

    @property
    def cut_frames(self) -> LostFrames | None:
        """The missing tail of a cut file (recovering reader), if any."""
        return self.lost[-1] if self.lost and self.lost[-1].cut else None

    def _trailing_data(self, f, size: int, header_end: int) -> None:
        """No trailer at the end: if a complete trailer sits a little earlier, the file is a whole
        stream with bytes appended, not a truncated one; say so."""
        start = max(header_end, size - _TRAILING_SEARCH)
        tail = self._read(f, start, size - start, "trailer")
        end = tail.rfind(END_MAGIC, 0, len(tail) - 1)  # one that ends before the file does
        while end >= TRAILER_SIZE - len(END_MAGIC):
            stream_end = start + end + len(END_MAGIC)
            trailer = tail[end + len(END_MAGIC) - TRAILER_SIZE:end + len(END_MAGIC)]
            try:
                offset = parse_trailer(trailer, stream_end, header_end)
                index_len = stream_end - TRAILER_SIZE - offset
                (count,) = struct.unpack("<I", self._read(f, offset, 4, "index"))
                if index_len != 4 + 12 * count:  # checked before reading: no large read on a guess
                    raise BitstreamError("not an index")
                parse_index(self._read(f, offset, index_len, "index"), trailer)
            except BitstreamError:
                end = tail.rfind(END_MAGIC, 0, end)
                continue
            raise BitstreamError(f"{size - stream_end} bytes of other data after the end of the stream "
                                 f"(at offset {stream_end}): appended or corrupt file")

    def read_gop(self, i: int) -> list[AccessUnit]:
        """Access units of GOP ``i``; reads only that GOP's bytes, checks every CRC."""
        return list(self.iter_gop(i))

    def iter_gop(self, i: int) -> Iterator[AccessUnit]:
        """Access units of GOP ``i`` one at a time, each checked (CRC, fields) before it is
        yielded: the units before a damaged one are still delivered."""
        if not 0 <= i < len(self.gops):
            raise InputError(f"GOP {i} out of range: the stream has {len(self.gops)} GOPs")
        gop, offset = self.gops[i], self.gop_offsets[i]
        try:
            with open(self.path, "rb") as f:
                blob = self._read(f, offset, GOP_HEADER_SIZE + gop.data_length, f"GOP {gop.index}")
            # Re-check the header: the file may have been replaced since opening.
            if parse_gop_header(blob[:GOP_HEADER_SIZE], gop.index) != gop:
                raise BitstreamError(f"GOP {gop.index} header: changed since the file was opened")
            data, pos = memoryview(blob)[GOP_HEADER_SIZE:], 0
            for j in range(gop.frame_count):
                au, pos = parse_access_unit(data, pos, len(data), gop.first_frame + j, j == 0, self.version[0])
                yield au
            if pos != len(data):
                raise BitstreamError(f"GOP {gop.index}: {len(data) - pos} bytes after its last access unit")
        except OSError as e:
            raise InputError(_os_message(self.path, e)) from None
        except BitstreamError as e:
            raise BitstreamError(f"{self.path}: {e}") from None

    def gop_of_frame(self, frame_index: int) -> int:
        """Index of the GOP holding ``frame_index`` (to seek: decode from its I-frame)."""
        if not 0 <= frame_index < self.sequence.frame_count:
            raise InputError(f"frame {frame_index} out of range: the stream has "
                             f"{self.sequence.frame_count} frames")
        return bisect.bisect_right([g.first_frame for g in self.gops], frame_index) - 1

    def __iter__(self) -> Iterator[tuple[GopHeader, list[AccessUnit]]]:
        for i, gop in enumerate(self.gops):
            yield gop, self.read_gop(i)

    def __len__(self) -> int:
        return len(self.gops)

    def payload_bytes(self) -> int:
        """Total substream payload bytes (reads and verifies the whole file once)."""
        return self.file_size - self.overhead_bytes()

    def overhead_bytes(self) -> int:
        """Bytes that are not substream payload: headers, tables, CRCs, index, trailer."""
        if self._overhead is None:
            payload = sum(au.payload_bytes() for _, aus in self for au in aus)
            self._overhead = self.file_size - payload
        return self._overhead

    def to_dict(self) -> dict:
        return {"version": "%d.%d" % self.version, "file_size": self.file_size,
                "sequence": self.sequence.to_dict(), "gops": [g.to_dict() for g in self.gops]}

    def __enter__(self) -> "SvcReader":
        return self

    def __exit__(self, *exc) -> bool:
        return False
