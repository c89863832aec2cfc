"""Edge cases of the Redis key names (`jobs.store.keys`): the escape of `segment` byte by
byte, the job-stream names a retry key accepts, the prefix rule at its limits, and every
key's exact name (written out here, issue 15)."""

from __future__ import annotations

import hashlib

import pytest

from jobs.store.keys import Keys, check_prefix, segment


def test_each_escaped_byte_is_two_hex_digits_so_short_bytes_never_meet_longer_ones() -> None:
    # `%X` would give "%10" for both: "\x01" then "0", and "\x10".
    assert segment("\x01" + "0") == "%010"
    assert segment("\x10") == "%10"
    assert segment("\x01" + "0") != segment("\x10")
    assert segment("\x00") == "%00"


def test_the_escape_is_of_utf8_bytes_upper_case_hex() -> None:
    assert segment("é") == "%C3%A9"
    assert segment("a_b") == "a%5Fb"
    assert segment("%") == "%25"
    assert segment(" ") == "%20"
    assert segment("a/b:c") == "a_b%3Ac"
    # The characters kept as they are, alone and mixed with an escaped one.
    assert segment("Az09.-@+") == "Az09.-@+"
    assert segment("Az09.-@+ ") == "Az09.-@+%20"


def test_an_empty_segment_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot be empty"):
        segment("")


def test_a_retry_key_needs_a_job_stream_of_this_prefix_without_a_colon() -> None:
    keys = Keys("p")
    assert keys.retry_schedule("p:jobs:linux_arm64") == "p:jobs:linux_arm64:retry"
    assert keys.retry_data("p:jobs:control") == "p:jobs:control:retry-data"
    for bad in (
        "p:jobs:linux_arm64:x",  # a stream name with `:` is not a stream of this prefix
        "p:jobs:a_b:retry",
        "p:jobs:",  # no name
        "p:jobs:dead",  # neither control nor a platform (platforms have `_`)
        "p:jobs:streams",
        "q:jobs:linux_arm64",
        "xp:jobs:linux_arm64",
    ):
        with pytest.raises(ValueError, match="is not a job stream under prefix 'p'"):
            keys.retry_schedule(bad)


def test_a_job_stream_needs_a_platform_with_a_slash() -> None:
    assert Keys("p").job_stream("linux/amd64") == "p:jobs:linux_amd64"
    with pytest.raises(ValueError, match="'amd64' is not a platform such as linux/arm64"):
        Keys("p").job_stream("amd64")


@pytest.mark.parametrize("prefix", ["a", "a" * 64, "A.b_c-d:e", "0aibrix", "aibrix:staging"])
def test_a_usable_prefix(prefix: str) -> None:
    assert check_prefix(prefix) == prefix
    assert Keys(prefix).events == f"{prefix}:events"


@pytest.mark.parametrize(
    "prefix", ["", "a" * 65, "a:", "_a", ".a", "-a", ":a", "a b", "a/b", "a\n"]
)
def test_an_unusable_prefix_is_refused_with_the_rule(prefix: str) -> None:
    with pytest.raises(ValueError) as refused:
        check_prefix(prefix)
    assert str(refused.value) == (
        f"key prefix {prefix!r} is not usable: use letters, digits, '.', '_', '-' or ':' "
        "(not at the end), at most 64 characters, such as 'aibrix' or 'aibrix:staging'"
    )


def test_every_key_name_exactly() -> None:
    k = Keys("P")
    assert Keys().prefix == "aibrix"
    assert k.releases == "P:releases"
    assert k.active_run("v:1") == "P:release:v%3A1:active"
    assert k.runs("v1") == "P:release:v1:runs"
    assert k.record("v1") == "P:release:v1:record"
    assert k.run("v1", "r_1") == "P:release:v1:run:r%5F1"
    assert k.run_detail("v1", "r1") == [
        "P:release:v1:run:r1",
        "P:release:v1:run:r1:builds",
        "P:release:v1:run:r1:indexes",
        "P:release:v1:run:r1:merges",
        "P:release:v1:run:r1:approvals",
        "P:release:v1:run:r1:promotions",
        "P:release:v1:run:r1:overwrites",
        "P:release:v1:run:r1:replied",
    ]
    assert k.events == "P:events"
    assert k.audit == "P:audit"
    assert k.control_stream == "P:jobs:control"
    assert k.dead_letters == "P:jobs:dead"
    assert k.job_streams == "P:jobs:streams"
    assert k.pending("a:b") == "P:job:pending:a%3Ab"
    assert k.done("a:b") == "P:job:done:a%3Ab"
    assert k.cancelled("v1", "r1") == "P:cancel:v1:r1"
    assert k.cancelled("v1", "") == "P:cancel:v1:"
    assert k.status_outbox == "P:slack:status-outbox"
    assert k.status_post("v1", "r1") == "P:release:v1:run:r1:post"
    assert k.status_post_tried("v1", "r1") == "P:release:v1:run:r1:post-tried"
    assert k.notifier_leader == "P:notifier:leader"
    assert k.notifier_cursor == "P:notifier:cursor"
    assert k.sync("j:1") == "P:sync:j%3A1"


def test_hashed_keys_take_forty_hex_digits_of_sha256() -> None:
    k = Keys("P")
    digest = hashlib.sha256(b"T1.2").hexdigest()[:40]
    assert k.slack_delivery("T1.2") == f"P:slack:delivery:{digest}"
    assert k.audit_once("T1.2") == f"P:audit-once:{digest}"
    assert k.slack_delivery("a") != k.slack_delivery("b")
    with pytest.raises(ValueError) as refused:
        k.slack_delivery("")
    assert str(refused.value) == "a delivery identity cannot be empty"
