"""Minimal ELF files and image layers made from bytes, for the binary architecture check.

An ELF header is 64 bytes (52 for 32-bit); the check reads only `e_ident` and `e_machine`,
so a header is a complete test binary: it never runs, it is only judged. Layers are tar
archives (gzip or not) built with `tarfile` in memory.
"""

from __future__ import annotations

import gzip
import io
import struct
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass

ET_EXEC = 2
ET_DYN = 3

# GOARCH -> (e_machine, class, data)
MACHINES = {
    "amd64": (62, 2, 1),
    "arm64": (183, 2, 1),
    "arm": (40, 1, 1),
    "386": (3, 1, 1),
    "ppc64le": (21, 2, 1),
    "s390x": (22, 2, 2),
    "riscv64": (243, 2, 1),
}


def elf_header(arch: str, *, e_type: int = ET_EXEC) -> bytes:
    """A valid ELF header for `arch` (a static executable by default; ET_DYN for a
    dynamically linked, position-independent one)."""
    machine, elf_class, data = MACHINES[arch]
    order = "<" if data == 1 else ">"
    ident = b"\x7fELF" + bytes([elf_class, data, 1, 0]) + bytes(8)
    if elf_class == 2:
        rest = struct.pack(
            order + "HHIQQQIHHHHHH", e_type, machine, 1, 0, 64, 0, 0, 64, 56, 0, 64, 0, 0
        )
    else:
        rest = struct.pack(
            order + "HHIIIIIHHHHHH", e_type, machine, 1, 0, 52, 0, 0, 52, 32, 0, 40, 0, 0
        )
    return ident + rest


@dataclass(frozen=True)
class Member:
    name: str
    data: bytes = b""
    kind: str = "file"  # file, dir, symlink, hardlink
    link: str = ""


def tar_bytes(members: Sequence[Member], *, compress: bool = True) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for member in members:
            info = tarfile.TarInfo(member.name)
            if member.kind == "dir":
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
            elif member.kind == "symlink":
                info.type = tarfile.SYMTYPE
                info.linkname = member.link
                tar.addfile(info)
            elif member.kind == "hardlink":
                info.type = tarfile.LNKTYPE
                info.linkname = member.link
                tar.addfile(info)
            else:
                info.size = len(member.data)
                info.mode = 0o755
                tar.addfile(info, io.BytesIO(member.data))
    raw = buffer.getvalue()
    return gzip.compress(raw, mtime=0) if compress else raw
