"""Reading an image's layers from the registry, streamed: each layer blob flows from the
registry's GET through a gzip decompressor into a streaming tar reader, one chunk at a
time, and only each member's metadata (and, for the files a `HeadPlan` asks for, their
first bytes) is kept. Memory is bounded by one chunk, the decompressor's window and the
number of paths; never by a layer's size.

The tar reader (`tarfile`, stream mode `r|`) is synchronous, so it runs in a thread and
pulls chunks from the event loop's streaming GET (`run_coroutine_threadsafe`). The blob's
digest is checked to the last byte (the rest of a layer after the tar's end-of-archive
marker is drained through the hash too).

Layers as BuildKit and Docker push them are gzip (`tar+gzip`) or plain tar; a zstd layer
(`tar+zstd`) cannot be read with the standard library and is reported as such.
"""

from __future__ import annotations

import asyncio
import tarfile
import zlib
from collections import deque
from collections.abc import AsyncIterator, Callable

from jobs.domain import messages
from jobs.domain.elf import HEAD_BYTES
from jobs.domain.errors import Failed
from jobs.domain.image_files import MAX_ENTRIES, Entry, HeadPlan, ImageTree, Kind, normalize_member
from jobs.domain.manifests import Descriptor
from jobs.domain.references import Reference
from jobs.registry.client import RegistryClient

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
# The most decompressed bytes handed to the tar reader per read; input piece; output piece.
_READ_MAX = 1024 * 1024
_PIECE = 64 * 1024
_OUT_PIECE = 256 * 1024


class LayerError(Failed):
    """A layer that cannot be read as a tar archive (compression, corruption, size)."""


class _LayerStream:
    """A file-like `read(n)` over a layer's chunks: sniffs gzip, zstd or plain tar from
    the first bytes and decompresses gzip (every member of a multi-member stream)
    incrementally. Input is cut into small pieces and output made in bounded pieces, so no
    step copies more than a piece (tarfile reads 10 KiB at a time)."""

    def __init__(self, next_chunk: Callable[[], bytes | None]) -> None:
        self._next_chunk = next_chunk
        self._pieces: deque[bytes] = deque()  # input not yet fed to the decompressor
        self._out = b""  # decompressed output; `_pos` is how much was read
        self._pos = 0
        self._inflate: zlib._Decompress | None = None  # None between gzip members
        self._mode = ""  # "", "gzip", "tar"
        self._ended = False
        self.content = False  # whether any byte other than NUL came out

    def _fill(self) -> bool:
        """More input; False at the end of the blob."""
        if self._ended:
            return False
        chunk = self._next_chunk()
        if chunk is None:
            self._ended = True
            return False
        view = memoryview(chunk)
        for start in range(0, len(chunk), _PIECE):
            self._pieces.append(bytes(view[start : start + _PIECE]))
        return True

    def _take(self) -> bytes | None:
        """The next piece of input (maybe empty); None at the end of the blob."""
        if not self._pieces and not self._fill():
            return None
        return self._pieces.popleft() if self._pieces else b""

    def _sniff(self) -> None:
        head = b""
        while len(head) < 4 and (piece := self._take()) is not None:
            head += piece
        if head:
            self._pieces.appendleft(head)
        if head.startswith(ZSTD_MAGIC):
            raise LayerError(messages.binary_layer_zstd())
        self._mode = "gzip" if head.startswith(GZIP_MAGIC) else "tar"

    def _produce(self) -> bytes | None:
        """The next decompressed bytes; None at the end."""
        while True:
            if self._mode == "tar":
                return self._take()
            if self._inflate is None:  # before a gzip member: skip NUL padding
                piece = self._take()
                if piece is None:
                    return None
                piece = piece.lstrip(b"\0")
                if not piece:
                    continue
                self._pieces.appendleft(piece)
                self._inflate = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
            inflate = self._inflate
            if inflate.eof:
                if inflate.unused_data:
                    self._pieces.appendleft(inflate.unused_data)
                self._inflate = None
                continue
            source = inflate.unconsumed_tail
            if not source:
                taken = self._take()
                if taken is None:
                    return None  # a cut stream ends here; the tar reader says so
                source = taken
            try:
                out = inflate.decompress(source, _OUT_PIECE)
            except zlib.error:
                raise LayerError(messages.binary_layer_gzip_corrupt()) from None
            if out:
                return out

    def read(self, size: int = -1) -> bytes:
        if not self._mode:
            self._sniff()
        want = _READ_MAX if size is None or size < 0 else min(size, _READ_MAX)
        while len(self._out) - self._pos < want:
            more = self._produce()
            if more is None:
                break
            self._out = self._out[self._pos :] + more
            self._pos = 0
        data = self._out[self._pos : self._pos + want]
        self._pos += len(data)
        if not self.content and data.strip(b"\0"):
            self.content = True
        return data

    def drain(self) -> None:
        """Read the blob to its end (so its digest is checked)."""
        self._pieces.clear()
        while self._fill():
            self._pieces.clear()


def read_members(
    next_chunk: Callable[[], bytes | None], plan: HeadPlan, max_entries: int = MAX_ENTRIES
) -> list[Entry]:
    """The entries of one layer, read as a tar stream (blocking: run it in a thread)."""
    stream = _LayerStream(next_chunk)
    entries: list[Entry] = []
    try:
        # Closed by the `with` below; opening reads the first member, which may fail.
        tar = tarfile.open(fileobj=stream, mode="r|")  # type: ignore[call-overload]  # noqa: SIM115
    except tarfile.ReadError:
        # An empty layer (no bytes, or only the end-of-archive blocks) is a valid layer.
        if stream.content:
            raise LayerError(messages.binary_layer_not_tar()) from None
        stream.drain()
        return entries
    with tar:
        try:
            while (member := tar.next()) is not None:
                tar.members.clear()  # stream mode keeps every member otherwise
                path = normalize_member(member.name)
                if path is None:
                    continue
                if len(entries) >= max_entries:
                    raise LayerError(messages.binary_layer_too_many(max_entries))
                entries.append(_entry(tar, member, path, plan))
        except (tarfile.TarError, EOFError):
            raise LayerError(messages.binary_layer_not_tar()) from None
    stream.drain()
    return entries


def _entry(tar: tarfile.TarFile, member: tarfile.TarInfo, path: str, plan: HeadPlan) -> Entry:
    if member.isdir():
        return Entry(path, Kind.DIR)
    if member.issym():
        return Entry(path, Kind.SYMLINK, link=member.linkname)
    if member.islnk():
        return Entry(path, Kind.HARDLINK, link=normalize_member(member.linkname) or "/")
    if member.isreg():
        head = None
        if plan.wants(path):
            extracted = tar.extractfile(member)
            head = extracted.read(HEAD_BYTES) if extracted is not None else b""
        return Entry(path, Kind.FILE, head=head)
    return Entry(path, Kind.OTHER)


async def _next(chunks: AsyncIterator[bytes]) -> bytes | None:
    try:
        return await chunks.__anext__()
    except StopAsyncIteration:
        return None


async def read_layer(
    client: RegistryClient, ref: Reference, layer: Descriptor, plan: HeadPlan
) -> list[Entry]:
    """One layer's entries, streamed from the registry."""
    loop = asyncio.get_running_loop()
    # The client's idle timeout bounds each chunk; the margin covers a retried request. A
    # reader thread left behind by a cancelled check (a worker shutting down) thus ends
    # instead of waiting for a loop that no longer runs.
    wait = client.settings.idle_timeout * 2 + 5
    async with client.stream_blob(ref, layer) as chunks:

        def next_chunk() -> bytes | None:
            future = asyncio.run_coroutine_threadsafe(_next(chunks), loop)
            try:
                return future.result(timeout=wait)
            except TimeoutError:
                future.cancel()
                raise LayerError(messages.binary_layer_stalled(wait)) from None

        return await asyncio.to_thread(read_members, next_chunk, plan)


async def read_tree(
    client: RegistryClient, ref: Reference, layers: tuple[Descriptor, ...], plan: HeadPlan
) -> ImageTree:
    """The image's merged file tree: its layers read and applied in order."""
    tree = ImageTree()
    for layer in layers:
        tree.apply_layer(await read_layer(client, ref, layer, plan))
    return tree
