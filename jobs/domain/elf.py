"""ELF headers: which architecture a binary was built for, and whether that is the platform
its image claims.

An image's index entry and image config say `linux/arm64` because BuildKit stamps the
platform it was asked for; they say nothing about the bytes inside. A global
`ARG TARGETARCH=amd64` default (AIBrix's gateway-plugins nightly) made every platform's
build compile amd64 behind a correct label. The ELF header of the binaries is what the
kernel checks before `exec format error`, so it is what this module reads.

The header is a file format, not a wire protocol: its first 20 bytes (`e_ident`, `e_type`,
`e_machine`) are fixed-offset fields, read here with `struct`. pyelftools would parse the
whole file (sections, program headers) from a seekable stream; a layer is streamed once and
only the first bytes of each file are kept, so the 20 bytes are all there is to read.

Pure: bytes in, values out. Random bytes never raise; they are "not ELF".
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from jobs.domain.platforms import Platform

MAGIC = b"\x7fELF"
# What must be kept of a file to judge it: the ELF fields, or a `#!` line.
HEAD_BYTES = 256

ELFCLASS32 = 1
ELFCLASS64 = 2
ELFDATA2LSB = 1
ELFDATA2MSB = 2

EM_386 = 3
EM_MIPS = 8
EM_PPC64 = 21
EM_S390 = 22
EM_ARM = 40
EM_X86_64 = 62
EM_AARCH64 = 183
EM_RISCV = 243
EM_LOONGARCH = 258

# (e_machine, class, data) -> the OCI architecture name (GOARCH), as in image configs.
_ARCHITECTURES: dict[tuple[int, int, int], str] = {
    (EM_X86_64, ELFCLASS64, ELFDATA2LSB): "amd64",
    (EM_AARCH64, ELFCLASS64, ELFDATA2LSB): "arm64",
    (EM_ARM, ELFCLASS32, ELFDATA2LSB): "arm",
    (EM_386, ELFCLASS32, ELFDATA2LSB): "386",
    (EM_PPC64, ELFCLASS64, ELFDATA2LSB): "ppc64le",
    (EM_PPC64, ELFCLASS64, ELFDATA2MSB): "ppc64",
    (EM_S390, ELFCLASS64, ELFDATA2MSB): "s390x",
    (EM_RISCV, ELFCLASS64, ELFDATA2LSB): "riscv64",
    (EM_MIPS, ELFCLASS64, ELFDATA2LSB): "mips64le",
    (EM_MIPS, ELFCLASS64, ELFDATA2MSB): "mips64",
    (EM_MIPS, ELFCLASS32, ELFDATA2LSB): "mipsle",
    (EM_MIPS, ELFCLASS32, ELFDATA2MSB): "mips",
    (EM_LOONGARCH, ELFCLASS64, ELFDATA2LSB): "loong64",
}


@dataclass(frozen=True)
class ElfHeader:
    elf_class: int  # 1: 32-bit, 2: 64-bit
    data: int  # 1: little-endian, 2: big-endian
    machine: int  # e_machine

    @property
    def architecture(self) -> str | None:
        """The OCI architecture (`amd64`, `arm64`, ...), None for one no image platform has
        (x32: x86-64 machine code in a 32-bit class)."""
        return _ARCHITECTURES.get((self.machine, self.elf_class, self.data))

    @property
    def label(self) -> str:
        """What a sentence calls it: `x86-64`, `aarch64`, or the raw fields."""
        arch = self.architecture
        if arch is not None:
            return _NAMES.get(arch, arch)
        bits = {ELFCLASS32: "32", ELFCLASS64: "64"}.get(self.elf_class, "?")
        return f"e_machine {self.machine} ({bits}-bit)"


_NAMES = {"amd64": "x86-64", "arm64": "aarch64", "386": "i386", "arm": "32-bit arm"}


def parse_elf_header(head: bytes) -> ElfHeader | None:
    """The ELF identification and machine of a file from its first bytes; None when they
    are not an ELF header (too short, no magic, an unknown class or byte order)."""
    if len(head) < 20 or head[:4] != MAGIC:
        return None
    elf_class, data = head[4], head[5]
    if elf_class not in (ELFCLASS32, ELFCLASS64) or data not in (ELFDATA2LSB, ELFDATA2MSB):
        return None
    order = "<" if data == ELFDATA2LSB else ">"
    (machine,) = struct.unpack_from(order + "H", head, 18)
    return ElfHeader(elf_class, data, machine)


def interpreter_of(head: bytes) -> str | None:
    """The interpreter a `#!` line names (`#!/usr/bin/env python3` -> `/usr/bin/env`), or
    None when the file does not start with one."""
    if not head.startswith(b"#!"):
        return None
    line = head[2:].split(b"\n", 1)[0].strip()
    if not line:
        return None
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return text.split()[0]


def shebang_argument(head: bytes) -> str | None:
    """The first argument of a `#!/usr/bin/env NAME` line (the program env looks up)."""
    if not head.startswith(b"#!"):
        return None
    try:
        words = head[2:].split(b"\n", 1)[0].decode("utf-8").split()
    except UnicodeDecodeError:
        return None
    rest = [w for w in words[1:] if not w.startswith("-")]
    return rest[0] if rest else None


def matches(header: ElfHeader, platform: Platform) -> bool:
    """Whether a binary can run natively on `platform` (the variant, `arm/v7` or
    `arm/v6`, is not in the header's fixed fields and is not judged)."""
    return header.architecture == platform.architecture


class BinaryStatus(StrEnum):
    OK = "ok"
    MISMATCH = "mismatch"  # an ELF file of another architecture
    MISSING = "missing"  # a configured path, or the entrypoint, is not in the image
    UNREADABLE = "unreadable"  # a layer could not be read, so nothing was judged


@dataclass(frozen=True)
class BinaryFinding:
    """One file judged: `path` in the image, how it was reached (`entrypoint`,
    `interpreter of /entry.sh`, `configured path /usr/local/bin`), its header."""

    path: str
    via: str
    status: BinaryStatus
    header: ElfHeader | None = None
    detail: str = ""


@dataclass(frozen=True)
class BinaryCheck:
    """The check of one platform's image: every ELF file judged, and the problems."""

    platform: Platform
    digest: str
    checked: tuple[BinaryFinding, ...]

    @property
    def problems(self) -> tuple[BinaryFinding, ...]:
        return tuple(f for f in self.checked if f.status is not BinaryStatus.OK)

    @property
    def ok(self) -> bool:
        return not self.problems


def judge_file(path: str, via: str, head: bytes, platform: Platform) -> BinaryFinding | None:
    """A finding for an ELF file (OK or MISMATCH), None for a file that is not ELF."""
    header = parse_elf_header(head)
    if header is None:
        return None
    status = BinaryStatus.OK if matches(header, platform) else BinaryStatus.MISMATCH
    return BinaryFinding(path, via, status, header)


def summarize(checks: Sequence[BinaryCheck]) -> tuple[BinaryFinding, ...]:
    """Every problem of every platform, in order."""
    return tuple(f for check in checks for f in check.problems)
