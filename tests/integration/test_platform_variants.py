"""Issue 12 items 7 and 8 end to end: hand-made indexes whose entries and configs spell
platforms the ways containerd normalises (arm64 `v8.0` and `9.0`, `armhf` with a stray
variant, `i386` with a variant) or carry Windows os.version, pushed to the real lab
registry and judged by the real `aibrix-bot inspect` in a subprocess."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.conftest import REPO, Lab
from tests.support.oci_push import OciPusher, entry

BOT = str(REPO / ".venv" / "bin" / "aibrix-bot")
WIN_2019 = "10.0.17763.1234"
WIN_2022 = "10.0.20348.2227"


async def inspect(*args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        BOT,
        "inspect",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    assert not err.strip() or process.returncode != 0, err.decode()
    return process.returncode, out.decode()


async def inspect_json(*args: str) -> tuple[int, dict[str, Any]]:
    code, out = await inspect("--json", *args)
    [report] = json.loads(out)
    return code, report


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def statuses(report: dict[str, Any]) -> list[tuple[str, str, str | None]]:
    return [(p["platform"], p["status"], p["config_platform"]) for p in report["platforms"]]


async def test_arm_and_386_variants_are_judged_as_containerd_normalises_them(
    lab: Lab, session: aiohttp.ClientSession, unique_repo: str
) -> None:
    pusher = OciPusher(lab.registry)
    # Each config says the plain normal form; each index entry spells it another way.
    amd = await pusher.image(session, unique_repo, os="linux", arch="amd64")
    arm64 = await pusher.image(session, unique_repo, os="linux", arch="arm64")
    arm64_v9 = await pusher.image(session, unique_repo, os="linux", arch="arm64", variant="v9")
    arm7 = await pusher.image(session, unique_repo, os="linux", arch="arm", variant="v7")
    x86 = await pusher.image(session, unique_repo, os="linux", arch="386")
    await pusher.index(
        session,
        unique_repo,
        "v1",
        [
            entry(amd, "linux", "amd64"),
            entry(arm64, "linux", "arm64", "v8.0"),
            entry(arm64_v9, "linux", "arm64", "9.0"),
            entry(arm7, "linux", "armhf", "v6"),
            entry(x86, "linux", "i386", "v1"),
        ],
    )
    ref = f"{lab.registry}/{unique_repo}:v1"
    required = "linux/amd64,linux/arm64,linux/arm64/v9,linux/arm/v7,linux/386"
    code, report = await inspect_json("--require", required, ref)
    assert report["verdict"] == "ok", report
    assert code == 0
    assert report["missing"] == []
    assert statuses(report) == [
        ("linux/amd64", "ok", "linux/amd64"),
        ("linux/arm64", "ok", "linux/arm64"),
        ("linux/arm64/v9", "ok", "linux/arm64/v9"),
        ("linux/arm/v7", "ok", "linux/arm/v7"),
        ("linux/386", "ok", "linux/386"),
    ]
    # The user's own spelling of arm64 with its base variant is the same requirement.
    code, report = await inspect_json("--require", "linux/amd64,linux/arm64/v8", ref)
    assert (code, report["verdict"], report["required"]) == (
        0,
        "ok",
        ["linux/amd64", "linux/arm64"],
    )


async def test_a_config_that_really_differs_is_still_a_mismatch(
    lab: Lab, session: aiohttp.ClientSession, unique_repo: str
) -> None:
    pusher = OciPusher(lab.registry)
    amd = await pusher.image(session, unique_repo, os="linux", arch="amd64")
    v9 = await pusher.image(session, unique_repo, os="linux", arch="arm64", variant="9")
    index = await pusher.index(
        session,
        unique_repo,
        "v1",
        [entry(amd, "linux", "amd64"), entry(v9, "linux", "arm64", "v8")],
    )
    ref = f"{lab.registry}/{unique_repo}:v1"
    code, out = await inspect(ref)
    assert code == 1
    short = v9.digest[:19]
    assert (
        f"  - {ref}: the linux/arm64 entry {short} is really linux/arm64/v9 (its image config says so)"
        in out
    )
    assert f"  - {ref} is missing linux/arm64; the index has linux/amd64 only" in out
    assert index.digest in out


async def test_windows_builds_differing_only_in_os_version_are_two_platforms(
    lab: Lab, session: aiohttp.ClientSession, unique_repo: str
) -> None:
    pusher = OciPusher(lab.registry)
    amd = await pusher.image(session, unique_repo, os="linux", arch="amd64")
    wins = [
        await pusher.image(session, unique_repo, os="windows", arch="amd64", os_version=version)
        for version in (WIN_2019, WIN_2022)
    ]
    await pusher.index(
        session,
        unique_repo,
        "v1",
        [
            entry(amd, "linux", "amd64"),
            entry(wins[0], "windows", "amd64", os_version=WIN_2019, os_features=("win32k",)),
            entry(wins[1], "windows", "amd64", os_version=WIN_2022),
        ],
    )
    ref = f"{lab.registry}/{unique_repo}:v1"
    code, report = await inspect_json("--require", "linux/amd64,windows/amd64", ref)
    assert (code, report["verdict"]) == (0, "ok"), report
    assert statuses(report) == [
        ("linux/amd64", "ok", "linux/amd64"),
        (f"windows/amd64 {WIN_2019} +win32k", "ok", f"windows/amd64 {WIN_2019}"),
        (f"windows/amd64 {WIN_2022}", "ok", f"windows/amd64 {WIN_2022}"),
    ]
    code, out = await inspect("--require", "linux/amd64,windows/amd64", ref)
    assert code == 0
    assert f"  windows/amd64 {WIN_2019} +win32k  {wins[0].digest[:19]}  ok" in out
    assert f"  windows/amd64 {WIN_2022}          {wins[1].digest[:19]}  ok" in out


async def test_a_windows_entry_whose_config_is_another_build_is_a_mismatch(
    lab: Lab, session: aiohttp.ClientSession, unique_repo: str
) -> None:
    pusher = OciPusher(lab.registry)
    win = await pusher.image(session, unique_repo, os="windows", arch="amd64", os_version=WIN_2022)
    await pusher.index(
        session, unique_repo, "v1", [entry(win, "windows", "amd64", os_version=WIN_2019)]
    )
    ref = f"{lab.registry}/{unique_repo}:v1"
    code, out = await inspect("--require", "windows/amd64", ref)
    assert code == 1
    assert (
        f"  - {ref}: the windows/amd64 {WIN_2019} entry {win.digest[:19]} is really "
        f"windows/amd64 {WIN_2022} (its image config says so)"
    ) in out
    assert f"  - {ref} is missing windows/amd64; it has no usable platform at all" in out
