"""An image's file tree from its layers, which files the binary check judges, and the
streaming layer reader (issue 13 item 8). No services: layers are made in memory."""

from __future__ import annotations

import contextlib
import gzip
import json
import zlib
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobs.domain import messages
from jobs.domain.elf import BinaryStatus
from jobs.domain.image_files import (
    Entry,
    HeadPlan,
    ImageTree,
    Kind,
    RunConfig,
    first_plan,
    judge_tree,
    normalize_member,
    run_config_from,
)
from jobs.domain.platforms import parse_platform
from jobs.registry.layers import LayerError, read_members
from tests.support.elf_files import ET_DYN, Member, elf_header, tar_bytes

ARM64 = parse_platform("linux/arm64")
EVERYTHING = HeadPlan(prefixes=("/",))


def chunks_of(data: bytes, size: int) -> Callable[[], bytes | None]:
    parts = [data[i : i + size] for i in range(0, len(data), size)]

    def next_chunk() -> bytes | None:
        return parts.pop(0) if parts else None

    return next_chunk


def tree_of(*layers: list[Member], plan: HeadPlan = EVERYTHING) -> ImageTree:
    tree = ImageTree()
    for members in layers:
        tree.apply_layer(read_members(chunks_of(tar_bytes(members), 7), plan))
    return tree


def check(tree: ImageTree, run: RunConfig, paths: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    walk = judge_tree(tree, run, paths, ARM64, "sha256:" + "a" * 64)
    assert walk.check is not None, walk.need
    return [(f.path, f.status.value) for f in walk.check.checked]


def test_member_names_are_absolute_and_normalised() -> None:
    assert normalize_member("./usr/bin/x") == "/usr/bin/x"
    assert normalize_member("usr//bin/../lib/.hidden") == "/usr/lib/.hidden"
    assert normalize_member("../../etc/passwd") == "/etc/passwd"
    assert normalize_member("./") is None and normalize_member(".") is None


def test_whiteouts_and_opaque_directories_apply_in_layer_order() -> None:
    base = [
        Member("bin/", kind="dir"),
        Member("bin/app", elf_header("arm64")),
        Member("opt/", kind="dir"),
        Member("opt/one", elf_header("amd64")),
        Member("opt/sub/two", elf_header("amd64")),
        Member("gone", elf_header("amd64")),
    ]
    upper = [
        Member("opt/.wh..wh..opq"),
        Member("opt/three", elf_header("arm64")),
        Member(".wh.gone"),
        Member("bin/.wh.app"),
        Member("bin/app", elf_header("amd64")),  # same layer: the whiteout does not touch it
    ]
    tree = tree_of(base, upper)
    assert sorted(p for p in tree.nodes if p.startswith("/opt")) == ["/opt", "/opt/three"]
    assert "/gone" not in tree.nodes
    assert check(tree, RunConfig(argv=("/bin/app",)), ("/opt",)) == [
        ("/bin/app", "mismatch"),
        ("/opt/three", "ok"),
    ]


def test_a_file_replacing_a_directory_drops_what_was_below_it() -> None:
    tree = tree_of([Member("x/y", b"1")], [Member("x", b"2")])
    assert "/x/y" not in tree.nodes and tree.nodes["/x"].kind is Kind.FILE


def test_the_entrypoint_is_found_on_path_through_symlinks_and_hardlinks() -> None:
    layer = [
        Member("bin/busybox", elf_header("amd64")),
        Member("bin/sh", kind="symlink", link="busybox"),
        Member("usr/bin/tool", kind="hardlink", link="bin/busybox"),
        Member("usr/local/bin", kind="symlink", link="/usr/bin"),
    ]
    tree = tree_of(layer)
    assert tree.resolve("/usr/local/bin/tool") == "/usr/bin/tool"
    assert check(tree, RunConfig(argv=("sh", "-c", "true"))) == [("/bin/busybox", "mismatch")]
    assert check(tree, RunConfig(argv=("tool",), path="/usr/local/bin")) == [
        ("/usr/bin/tool", "mismatch")
    ]


def test_scripts_are_followed_to_their_interpreter_and_env_to_its_program() -> None:
    layer = [
        Member("app/start.sh", b"#!/bin/sh\nexec /app/server\n"),
        Member("app/main.py", b"#!/usr/bin/env python3\nprint(1)\n"),
        Member("bin/sh", elf_header("arm64")),
        Member("usr/bin/env", elf_header("arm64")),
        Member("usr/local/bin/python3", elf_header("amd64", e_type=ET_DYN)),
    ]
    tree = tree_of(layer)
    assert check(tree, RunConfig(argv=("./start.sh",), workdir="/app")) == [("/bin/sh", "ok")]
    assert check(tree, RunConfig(argv=("/app/main.py",))) == [
        ("/usr/bin/env", "ok"),
        ("/usr/local/bin/python3", "mismatch"),
    ]


def test_a_missing_entrypoint_or_configured_path_is_a_finding() -> None:
    tree = tree_of([Member("bin/sh", elf_header("arm64"))])
    assert check(tree, RunConfig(argv=("/manager",)), ("/opt/bin",)) == [
        ("/opt/bin", "missing"),
        ("/manager", "missing"),
    ]
    # A script's missing interpreter counts for the entrypoint, not for a configured dir.
    tree = tree_of([Member("usr/bin/c_rehash", b"#!/usr/bin/perl\n")])
    assert check(tree, RunConfig(), ("/usr/bin",)) == []
    assert check(tree, RunConfig(argv=("c_rehash",))) == [("/usr/bin/perl", "missing")]


def test_a_file_whose_bytes_were_not_kept_is_asked_for_again() -> None:
    layer = [
        Member("app/run", b"#!/opt/venv/bin/python\n"),
        Member("opt/venv/bin/python", elf_header("amd64")),
    ]
    run = RunConfig(argv=("/app/run",))
    plan = first_plan(run, ())
    tree = tree_of(layer, plan=plan)
    walk = judge_tree(tree, run, (), ARM64, "sha256:" + "a" * 64)
    assert walk.check is None and walk.need == {"/opt/venv/bin/python"}
    again = tree_of(layer, plan=plan.with_exact(walk.need))
    assert check(again, run) == [("/opt/venv/bin/python", "mismatch")]


def test_run_config_takes_entrypoint_then_cmd_path_and_workdir() -> None:
    raw = json.dumps(
        {
            "config": {
                "Entrypoint": ["/entry"],
                "Cmd": ["serve"],
                "Env": ["A=1", "PATH=/opt/bin:/bin"],
                "WorkingDir": "/srv",
            }
        }
    ).encode()
    run = run_config_from(raw)
    assert run == RunConfig(argv=("/entry", "serve"), path="/opt/bin:/bin", workdir="/srv")
    assert run_config_from(b'{"config": {"Cmd": ["python", "app.py"]}}').argv == (
        "python",
        "app.py",
    )
    assert run_config_from(b"not json") == RunConfig()
    assert run_config_from(b'{"config": {"Entrypoint": "x", "WorkingDir": "rel"}}') == RunConfig()


def test_gzip_with_several_members_plain_tar_and_empty_layers_are_read() -> None:
    raw = tar_bytes([Member("a", b"x"), Member("b", b"y")], compress=False)
    half = len(raw) // 2
    two_members = gzip.compress(raw[:half]) + b"\0" * 3 + gzip.compress(raw[half:])
    for data in (two_members, raw, gzip.compress(raw) + b"\0" * 9):
        entries = read_members(chunks_of(data, 5), EVERYTHING)
        assert [(e.path, e.head) for e in entries] == [("/a", b"x"), ("/b", b"y")]
    assert read_members(chunks_of(b"", 5), EVERYTHING) == []
    assert read_members(chunks_of(gzip.compress(bytes(1024)), 5), EVERYTHING) == []


def test_unreadable_layers_say_why() -> None:
    with pytest.raises(LayerError, match="not a valid tar"):
        read_members(chunks_of(b"first run linux/amd64/", 8), EVERYTHING)
    with pytest.raises(LayerError, match="zstd"):
        read_members(chunks_of(b"\x28\xb5\x2f\xfd" + bytes(100), 8), EVERYTHING)
    corrupt = bytearray(tar_bytes([Member("a", b"x" * 5000)]))
    corrupt[20:40] = bytes(20)
    with pytest.raises(LayerError):
        read_members(chunks_of(bytes(corrupt), 64), EVERYTHING)
    with pytest.raises(LayerError, match="more than 1 entries"):
        read_members(chunks_of(tar_bytes([Member("a"), Member("b")]), 64), EVERYTHING, 1)


def test_only_the_planned_files_keep_their_first_bytes() -> None:
    members = [Member("usr/bin/a", b"A" * 1000), Member("data/big", b"B" * 1000)]
    entries = read_members(chunks_of(tar_bytes(members), 100), HeadPlan(frozenset({"/usr/bin"})))
    heads = {e.path: e.head for e in entries}
    assert heads == {"/usr/bin/a": b"A" * 256, "/data/big": None}


@settings(max_examples=40, deadline=None)
@given(st.integers(min_value=1, max_value=3000), st.booleans())
def test_any_chunking_reads_the_same_entries(size: int, compress: bool) -> None:
    members = [Member(f"f{i}", bytes([i]) * (i * 300)) for i in range(8)]
    data = tar_bytes(members, compress=compress)
    entries = read_members(chunks_of(data, size), EVERYTHING)
    assert [e.path for e in entries] == [f"/f{i}" for i in range(8)]
    assert [e.head for e in entries] == [(bytes([i]) * (i * 300))[:256] for i in range(8)]


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=2000))
def test_random_layer_bytes_never_crash_the_reader(data: bytes) -> None:
    for blob in (data, zlib.compress(data)):
        with contextlib.suppress(LayerError):
            read_members(chunks_of(blob, 97), EVERYTHING)


def test_the_release_sentence_names_the_file() -> None:
    tree = tree_of([Member("gateway-plugins", elf_header("amd64"))])
    walk = judge_tree(tree, RunConfig(argv=("/gateway-plugins",)), (), ARM64, "sha256:" + "a" * 64)
    assert walk.check is not None
    [sentence] = messages.binary_problems("gateway-plugins v0.7.0", [walk.check])
    assert sentence == (
        "gateway-plugins v0.7.0: the linux/arm64 image's /gateway-plugins (entrypoint) is "
        "built for x86-64, not arm64"
    )
    assert walk.check.checked[0].status is BinaryStatus.MISMATCH
    assert isinstance(tree.nodes["/gateway-plugins"], Entry)


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=0, max_value=2000), st.binary(min_size=1, max_size=64))
def test_a_cut_or_damaged_layer_is_a_layer_error_never_a_crash(cut: int, noise: bytes) -> None:
    raw = tar_bytes([Member("a", b"x" * 700), Member("b", b"y" * 900)], compress=False)
    damaged = raw[:cut] + noise + raw[cut + len(noise) :]
    for blob in (raw[:cut], damaged, gzip.compress(raw)[: cut // 2]):
        with contextlib.suppress(LayerError):
            read_members(chunks_of(blob, 50), EVERYTHING)


def test_paths_read_from_an_image_are_shown_escaped_and_bounded() -> None:
    name = "evil\n<!channel>" + "x" * 300
    tree = tree_of([Member(name, elf_header("amd64"))])
    walk = judge_tree(tree, RunConfig(argv=("/" + name,)), (), ARM64, "sha256:" + "a" * 64)
    assert walk.check is not None
    [sentence] = messages.binary_problems("runtime v1.0.0", [walk.check])
    assert "\n" not in sentence and "\\n" in sentence and len(sentence) < 300
