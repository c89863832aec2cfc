"""Block Kit rendering stays inside Slack's limits, whatever the release holds."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from slack_sdk.web.async_client import AsyncWebClient

from handlers import blocks
from jobs.domain.platforms import Platform, parse_platform, platform_from_json
from jobs.domain.progress import StepProgress
from jobs.domain.references import parse_reference
from jobs.domain.release import BuildRecord, BuildState, ComponentIndex, Release, State
from jobs.domain.verdict import EntryFacts, judge
from jobs.domain.versions import parse_version
from jobs.registry.inspection import Inspection
from tests.support.blocks import assert_within_limits
from tests.support.slack_standin import SlackStandIn

TOKEN = "xoxb-blocks-test-0000"
CHANNEL = "C0RELEASES"
AMD64, ARM64 = parse_platform("linux/amd64"), parse_platform("linux/arm64")
PLATFORMS = (AMD64, ARM64)


def make_release(
    components: int,
    state: State = State.READY,
    *,
    reason: str = "",
    failed: bool = False,
    name_length: int = 20,
) -> Release:
    names = tuple(f"c{i:02d}-" + "x" * (name_length - 4) for i in range(components))
    builds: dict[tuple[str, Platform], BuildRecord] = {}
    for n, name in enumerate(names):
        for p in PLATFORMS:
            bad = failed and n % 3 == 0 and p == ARM64
            builds[(name, p)] = BuildRecord(
                name,
                p,
                BuildState.FAILED if bad else BuildState.PUSHED,
                None if bad else "sha256:" + f"{n:02d}" * 32,
                1,
                "exit code 1 <script>" if bad else "",
            )
    indexes = {
        name: ComponentIndex(name, "sha256:" + "e" * 64, "ok")
        for n, name in enumerate(names)
        if not (failed and n % 3 == 0)
    }
    return Release(
        version=parse_version("v0.3.0"),
        run_id="0123456789abcdef",
        state=state,
        state_reason=reason,
        requested_by="U0REQUESTER",
        channel=CHANNEL,
        platforms=PLATFORMS,
        components=names,
        source_ref="abc",
        created_at=0,
        updated_at=0,
        status_channel=CHANNEL,
        status_ts="1.0",
        previous_run_id="",
        active=True,
        builds=builds,
        indexes=indexes,
    )


def test_a_40_component_release_fits() -> None:
    release = make_release(40)
    message = blocks.release_message(release, tally_text="1 of 2 approvals: <@U0A>")
    assert_within_limits(message)
    shown = json.dumps(message.blocks)
    for name in release.components:
        assert name in shown  # split across sections, not dropped
    assert blocks.APPROVE_ACTION in shown and blocks.REJECT_ACTION in shown


def test_a_blocked_40_component_release_with_long_reasons_fits() -> None:
    reasons = "; ".join(
        f"c{i:02d} failed to build for linux/arm64: " + "y" * 300 for i in range(40)
    )
    message = blocks.release_message(make_release(40, State.BLOCKED, reason=reasons, failed=True))
    assert_within_limits(message)
    shown = json.dumps(message.blocks)
    assert blocks.APPROVE_ACTION not in shown
    assert blocks.RETRY_ACTION in shown


@settings(max_examples=40, deadline=None)
@given(
    components=st.integers(1, 200),
    name_length=st.integers(5, 60),
    state=st.sampled_from(list(State)),
    reason=st.text(max_size=20_000),
    failed=st.booleans(),
)
def test_any_release_renders_within_limits(
    components: int, name_length: int, state: State, reason: str, failed: bool
) -> None:
    release = make_release(components, state, reason=reason, failed=failed, name_length=name_length)
    progress = {(release.components[0], "linux/amd64"): StepProgress("building", 3, 7)}
    assert_within_limits(blocks.release_message(release, progress, tally_text="x" * 5000))


def test_buttons_only_when_ready_and_retry_only_when_blocked_by_failures() -> None:
    assert "Approve" in json.dumps(blocks.release_message(make_release(2)).blocks)
    blocked = blocks.release_message(make_release(2, State.BLOCKED, reason="rejected by <@U0A>"))
    assert "Approve" not in json.dumps(blocked.blocks)
    assert "Retry failed builds" not in json.dumps(blocked.blocks)
    failed = blocks.release_message(make_release(3, State.BLOCKED, failed=True))
    assert "Retry failed builds" in json.dumps(failed.blocks)
    for state in (State.BUILDING, State.PROMOTED, State.CANCELLED):
        assert blocks.gate_actions(make_release(2, state)) is None


def test_user_text_is_escaped() -> None:
    release = make_release(2, State.BLOCKED, reason="<!channel> & <https://evil|click>")
    shown = json.dumps(blocks.release_message(release).blocks)
    assert (
        "<!channel>" not in shown and "&lt;!channel&gt; &amp; &lt;https://evil|click&gt;" in shown
    )
    assert blocks.mention("U0REQUESTER") == "<@U0REQUESTER>"
    assert blocks.mention("cli:<bob>") == "`cli:&lt;bob&gt;`"
    error = blocks.error_message("'<@U0X>' is not a component")
    assert "<@" not in error.text


def test_progress_cells() -> None:
    release = make_release(1, State.BUILDING)
    name = release.components[0]
    building = {
        **release.builds,
        (name, AMD64): BuildRecord(name, AMD64, BuildState.BUILDING),
    }
    import dataclasses

    release = dataclasses.replace(release, builds=building)
    assert blocks.build_cell(release, name, AMD64, StepProgress("building", 3, 7)) == "building 3/7"
    assert blocks.build_cell(release, name, AMD64, None) == "building"
    assert blocks.build_cell(release, name, ARM64, None).startswith("pushed sha256:")


def arm64_only() -> blocks.Message:
    arm = parse_platform("linux/arm64")
    verdict = judge(
        [parse_platform("linux/amd64"), arm],
        [EntryFacts("sha256:" + "1" * 64, arm, arm)],
        attestations=1,
        is_index=True,
    )
    from jobs.registry.inspection import Inspection

    ref = parse_reference("127.0.0.1:5000/x/runtime:v0.3.0-rc.2")
    inspection = Inspection(
        ref, "sha256:" + "2" * 64, "application/vnd.oci.image.index.v1+json", verdict
    )
    return blocks.inspection_message(["runtime v0.3.0-rc.2"], [inspection])


def test_inspection_table_names_the_missing_platform() -> None:
    message = arm64_only()
    assert_within_limits(message)
    shown = json.dumps(message.blocks)
    assert "linux/amd64  missing" in shown
    assert "1 attestation manifests" in shown
    assert "runtime v0.3.0-rc.2 is missing linux/amd64; the index has linux/arm64 only" in shown


def windows_inspection() -> Inspection:
    amd, arm = parse_platform("linux/amd64"), parse_platform("linux/arm64")
    win_2019 = platform_from_json(
        {"os": "windows", "architecture": "amd64", "os.version": "10.0.17763.1234"}
    )
    win_2022 = platform_from_json(
        {"os": "windows", "architecture": "amd64", "os.version": "10.0.20348.2227"}
    )
    arm_v8 = platform_from_json({"os": "linux", "architecture": "arm64", "variant": "v8.0"})
    assert win_2019 and win_2022 and arm_v8
    facts = [
        EntryFacts("sha256:" + "1" * 64, amd, amd),
        EntryFacts("sha256:" + "2" * 64, win_2019, win_2019),
        EntryFacts("sha256:" + "3" * 64, win_2022, win_2022),
        EntryFacts("sha256:" + "4" * 64, arm_v8, arm),
        EntryFacts("sha256:" + "5" * 64, arm, arm),
    ]
    verdict = judge([amd, parse_platform("windows/amd64")], facts, is_index=True)
    ref = parse_reference("127.0.0.1:5000/x/runtime:v1")
    return Inspection(ref, "sha256:" + "6" * 64, None, verdict)


def test_inspection_card_lists_each_windows_build_and_marks_a_duplicate() -> None:
    inspection = windows_inspection()
    assert blocks.inspection_lines(inspection) == [
        "PLATFORM                       STATUS     DIGEST",
        "linux/amd64                    present    sha256:111111111111",
        "windows/amd64 10.0.17763.1234  present    sha256:222222222222",
        "windows/amd64 10.0.20348.2227  present    sha256:333333333333",
        "linux/arm64                    extra      sha256:444444444444",
        "linux/arm64                    duplicate  sha256:555555555555",
    ]
    message = blocks.inspection_message(["runtime v1"], [inspection])
    assert_within_limits(message)
    assert "ok: every required platform is present" in json.dumps(message.blocks)


def test_many_inspections_fit() -> None:
    one = arm64_only()
    assert one.blocks
    from jobs.registry.inspection import Inspection

    arm = parse_platform("linux/arm64")
    verdict = judge(
        [parse_platform("linux/amd64"), arm],
        [EntryFacts("sha256:" + "1" * 64, arm, arm)],
        is_index=True,
    )
    refs = [parse_reference(f"127.0.0.1:5000/x/c{i}:v1") for i in range(80)]
    inspections = [Inspection(r, "sha256:" + "2" * 64, None, verdict) for r in refs]
    assert_within_limits(blocks.inspection_message([str(r) for r in refs], inspections))


@pytest.fixture
async def standin() -> AsyncIterator[SlackStandIn]:
    async with SlackStandIn(TOKEN, channels={CHANNEL: "releases"}) as s:
        yield s


async def test_the_stand_in_accepts_a_40_component_release(standin: SlackStandIn) -> None:
    client = AsyncWebClient(token=TOKEN, base_url=standin.api_url)
    for release in (
        make_release(40),
        make_release(40, State.BLOCKED, reason="z" * 9000, failed=True),
    ):
        message = blocks.release_message(release, tally_text="0 of 2 approvals")
        posted = await client.chat_postMessage(
            channel=CHANNEL, text=message.text, blocks=message.blocks
        )
        assert posted["ok"]
        updated = await client.chat_update(
            channel=CHANNEL, ts=posted["ts"], text=message.text, blocks=message.blocks
        )
        assert updated["ok"]
    reply = blocks.failure_reply("runtime", "linux/arm64", "exit 1", ["line <x>"] * 2000)
    posted = await client.chat_postMessage(channel=CHANNEL, text=reply.text, blocks=reply.blocks)
    assert posted["ok"]
