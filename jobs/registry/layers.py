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
from collections.abc import AsyncIterator, Callable

from jobs.domain.elf import HEAD_BYTES
from jobs.domain.errors import Failed
from jobs.domain.image_files import MAX_ENTRIES, Entry, HeadPlan, ImageTree, Kind, normalize_member
from jobs.domain.manifests import Descriptor
from jobs.domain.references import Reference
from jobs.registry.client import RegistryClient

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
# The most decompressed bytes handed to the tar reader per read.
_READ_MAX = 1024 * 1024


class LayerError(Failed):
    """A layer that cannot be read as a tar archive (compression, corruption, size)."""


class _LayerStream:
    """A file-like `read(n)` over a layer's chunks: sniffs gzip, zstd or plain tar from
    the first bytes and decompresses gzip (every member of a multi-member stream)
    incrementally, never more than `n` bytes out per call."""

    def __init__(self, next_chunk: Callable[[], bytes | None]) -> None:
        self._next_chunk = next_chunk
        self._pending = b""  # compressed input not yet fed
        self._out = b""  # decompressed output not yet read
        self._inflate: zlib._Decompress | None = None
        self._mode = ""  # "", "gzip", "tar"
        self._ended = False

    def _fill(self) -> bool:
        """More input; False at the end of the blob."""
        if self._ended:
            return False
        chunk = self._next_chunk()
        if chunk is None:
            self._ended = True
            return False
        self._pending += chunk
        return True

    def _sniff(self) -> None:
        while len(self._pending) < 4 and self._fill():
            pass
        if self._pending.startswith(ZSTD_MAGIC):
            raise LayerError("the layer is zstd-compressed, which this check cannot read")
        if self._pending.startswith(GZIP_MAGIC):
            self._mode = "gzip"
            self._inflate = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        else:
            self._mode = "tar"

    def read(self, size: int = -1) -> bytes:
        if not self._mode:
            self._sniff()
        want = _READ_MAX if size is None or size < 0 else min(size, _READ_MAX)
        while len(self._out) < want:
            if not self._step(want - len(self._out)):
                break
        data, self._out = self._out[:want], self._out[want:]
        return data

    def _step(self, room: int) -> bool:
        """Move some bytes to `_out`; False when there are none left."""
        if self._mode == "tar":
            if not self._pending and not self._fill():
                return False
            self._out += self._pending
            self._pending = b""
            return True
        inflate = self._inflate
        assert inflate is not None
        if inflate.eof:
            rest = inflate.unused_data + self._pending
            self._pending = b""
            if not rest.strip(b"\0"):
                if self._fill():
                    self._pending = rest + self._pending
                    return True
                return False
            inflate = self._inflate = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
            self._pending = rest
        source = inflate.unconsumed_tail or self._pending
        if not inflate.unconsumed_tail:
            self._pending = b""
        if not source:
            return self._fill()
        try:
            out = inflate.decompress(source, room)
        except zlib.error:
            raise LayerError("the layer's gzip stream is corrupt") from None
        self._out += out
        return True

    def drain(self) -> None:
        """Read the blob to its end (so its digest is checked)."""
        while self._fill():
            self._pending = b""


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
        stream.drain()
        # An empty layer (no members at all) is a valid layer.
        return entries
    with tar:
        while True:
            try:
                member = tar.next()
            except tarfile.ReadError:
                raise LayerError("the layer is not a valid tar archive") from None
            if member is None:
                break
            tar.members.clear()  # stream mode keeps every member otherwise
            path = normalize_member(member.name)
            if path is None:
                continue
            if len(entries) >= max_entries:
                raise LayerError(f"the layer has more than {max_entries} entries")
            entries.append(_entry(tar, member, path, plan))
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
    async with client.stream_blob(ref, layer) as chunks:

        def next_chunk() -> bytes | None:
            return asyncio.run_coroutine_threadsafe(_next(chunks), loop).result()

        return await asyncio.to_thread(read_members, next_chunk, plan)


async def read_tree(
    client: RegistryClient, ref: Reference, layers: tuple[Descriptor, ...], plan: HeadPlan
) -> ImageTree:
    """The image's merged file tree: its layers read and applied in order."""
    tree = ImageTree()
    for layer in layers:
        tree.apply_layer(await read_layer(client, ref, layer, plan))
    return tree
