"""The terminal table `aibrix-bot inspect` prints, for entries the platform rules single
out: Windows builds that differ only in os.version, and normalised arm64 variants."""

from __future__ import annotations

from bot.report import inspection_table
from jobs.domain.platforms import parse_platform, platform_from_json
from jobs.domain.references import parse_reference
from jobs.domain.verdict import EntryFacts, judge
from jobs.registry.inspection import Inspection


def test_each_windows_build_has_its_own_row_and_arm64_v8_0_reads_as_arm64() -> None:
    amd = parse_platform("linux/amd64")
    win = [
        platform_from_json({"os": "windows", "architecture": "amd64", "os.version": version})
        for version in ("10.0.17763.1234", "10.0.20348.2227")
    ]
    arm = platform_from_json({"os": "linux", "architecture": "arm64", "variant": "v8.0"})
    assert win[0] and win[1] and arm
    facts = [
        EntryFacts("sha256:" + "1" * 64, amd, amd),
        EntryFacts("sha256:" + "2" * 64, arm, parse_platform("linux/arm64")),
        EntryFacts("sha256:" + "3" * 64, win[0], win[0]),
        EntryFacts("sha256:" + "4" * 64, win[1], win[1]),
    ]
    required = (amd, parse_platform("linux/arm64/v8"), parse_platform("windows/amd64"))
    verdict = judge(required, facts)
    ref = parse_reference("127.0.0.1:5000/x/runtime:v1")
    assert inspection_table(Inspection(ref, "sha256:" + "5" * 64, None, verdict)) == "\n".join(
        [
            "127.0.0.1:5000/x/runtime:v1",
            "  digest: sha256:" + "5" * 64,
            "  verdict: ok: every required platform is present",
            "  required: linux/amd64, linux/arm64, windows/amd64",
            "  PLATFORM                       DIGEST               STATUS  DETAIL",
            "  linux/amd64                    sha256:111111111111  ok",
            "  linux/arm64                    sha256:222222222222  ok",
            "  windows/amd64 10.0.17763.1234  sha256:333333333333  ok",
            "  windows/amd64 10.0.20348.2227  sha256:444444444444  ok",
            "  attestations: 0",
        ]
    )


def test_a_second_entry_of_the_same_platform_is_marked() -> None:
    arm = parse_platform("linux/arm64")
    arm_v8 = platform_from_json({"os": "linux", "architecture": "arm64", "variant": "v8"})
    assert arm_v8 == arm
    facts = [
        EntryFacts("sha256:" + "1" * 64, arm, arm),
        EntryFacts("sha256:" + "2" * 64, arm_v8, arm),
    ]
    verdict = judge((arm,), facts)
    assert verdict.ok and verdict.duplicates == (arm,)
    ref = parse_reference("127.0.0.1:5000/x/runtime:v1")
    table = inspection_table(Inspection(ref, "sha256:" + "5" * 64, None, verdict))
    assert table.splitlines()[4:7] == [
        "  PLATFORM     DIGEST               STATUS  DETAIL",
        "  linux/arm64  sha256:111111111111  ok",
        "  linux/arm64  sha256:222222222222  ok      "
        "the same platform as an earlier entry; docker pull takes the first",
    ]
