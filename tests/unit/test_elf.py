"""ELF headers (issue 13 item 8): architecture from e_machine and class, and random bytes
that never crash the parser."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobs.domain.elf import (
    BinaryStatus,
    ElfHeader,
    interpreter_of,
    judge_file,
    parse_elf_header,
    shebang_argument,
)
from jobs.domain.platforms import parse_platform
from tests.support.elf_files import ET_DYN, MACHINES, elf_header

ARM64 = parse_platform("linux/arm64")


@pytest.mark.parametrize("arch", sorted(MACHINES))
def test_every_known_architecture_is_read_from_its_header(arch: str) -> None:
    header = parse_elf_header(elf_header(arch))
    assert header is not None and header.architecture == arch
    # A dynamically linked (position-independent) binary has the same machine.
    dynamic = parse_elf_header(elf_header(arch, e_type=ET_DYN))
    assert dynamic is not None and dynamic.architecture == arch


def test_x86_64_code_in_a_32_bit_class_is_no_image_architecture() -> None:
    # x32: EM_X86_64 with ELFCLASS32 runs on no amd64 or 386 image as such.
    header = ElfHeader(elf_class=1, data=1, machine=62)
    assert header.architecture is None
    assert header.label == "e_machine 62 (32-bit)"


def test_an_amd64_binary_in_an_arm64_image_is_a_mismatch_with_its_path() -> None:
    found = judge_file("/gateway-plugins", "entrypoint", elf_header("amd64"), ARM64)
    assert found is not None
    assert found.status is BinaryStatus.MISMATCH
    assert found.path == "/gateway-plugins"
    assert found.header is not None and found.header.label == "x86-64"
    ok = judge_file("/gateway-plugins", "entrypoint", elf_header("arm64"), ARM64)
    assert ok is not None and ok.status is BinaryStatus.OK


def test_a_file_that_is_not_elf_is_not_judged() -> None:
    assert judge_file("/app.py", "entrypoint", b"print('hi')\n", ARM64) is None
    assert parse_elf_header(b"\x7fELF") is None  # too short
    assert parse_elf_header(b"\x7fELF" + bytes([3, 1]) + bytes(14)) is None  # bad class
    assert parse_elf_header(b"\x7fELF" + bytes([2, 3]) + bytes(14)) is None  # bad byte order


def test_big_endian_machine_is_read_big_endian() -> None:
    header = parse_elf_header(elf_header("s390x"))
    assert header is not None and header.machine == 22 and header.architecture == "s390x"


@pytest.mark.parametrize(
    ("head", "interpreter", "argument"),
    [
        (b"#!/bin/sh\necho", "/bin/sh", None),
        (b"#! /usr/bin/env python3\n", "/usr/bin/env", "python3"),
        (b"#!/usr/bin/env -S python3 -u\n", "/usr/bin/env", "python3"),
        (b"#!/usr/local/bin/python3.11 -I\n", "/usr/local/bin/python3.11", None),
        (b"#!\n", None, None),
        (b"echo hi\n", None, None),
        (b"#!\xff\xfe\n", None, None),
    ],
)
def test_shebang_lines(head: bytes, interpreter: str | None, argument: str | None) -> None:
    assert interpreter_of(head) == interpreter
    if interpreter is not None and interpreter.endswith("/env"):
        assert shebang_argument(head) == argument


@given(st.binary(max_size=300))
def test_random_bytes_never_crash_and_are_not_elf_without_the_magic(data: bytes) -> None:
    header = parse_elf_header(data)
    if not data.startswith(b"\x7fELF"):
        assert header is None
    else:
        assert header is None or header.machine >= 0
    interpreter_of(data)
    shebang_argument(data)
    judge_file("/x", "entrypoint", data, ARM64)


@given(st.binary(min_size=16, max_size=200))
def test_random_bytes_after_the_magic_never_crash(tail: bytes) -> None:
    header = parse_elf_header(b"\x7fELF" + tail)
    if header is not None:
        assert header.elf_class in (1, 2) and header.data in (1, 2)
        assert isinstance(header.label, str)
