"""The job queue against a real Redis: leases, reclaim, retry, dead letter, dedup, cancel.

Also the pure parts it stands on: key layout, connection settings, backoff, job format.
Lease tests use leases of a few hundred milliseconds and wait for *behaviour* (the job
shows up for another worker) with a generous deadline, never for a fixed time.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobs.domain.platforms import parse_platform
from jobs.domain.versions import Version, parse_version
from jobs.store.connections import (
    RedisConnectError,
    RedisSettings,
    RedisSettingsError,
    connect,
    redact_url,
)
from jobs.store.keys import Keys, segment
from jobs.store.queue import (
    Job,
    JobFormatError,
    JobKind,
    backoff_seconds,
    idempotency_key,
    jittered,
)
from tests.support.queue import build_job as _job

ARM = "linux/arm64"
AMD = "linux/amd64"

# Pure: keys ---------------------------------------------------------------------------


@given(st.text(min_size=1), st.text(min_size=1))
def test_segment_is_injective_and_has_no_separator(a: str, b: str) -> None:
    assert ":" not in segment(a)
    assert "/" not in segment(a)
    if a != b:
        assert segment(a) != segment(b)


def test_segment_keeps_versions_and_platforms_readable() -> None:
    assert segment("v0.3.0-rc.2") == "v0.3.0-rc.2"
    assert segment("linux/arm64") == "linux_arm64"
    assert segment("linux/arm/v7") == "linux_arm_v7"
    assert segment("x86_64") == "x86%5F64"  # `_` escaped, so it cannot fake a `/`
    assert segment("v1:builds") == "v1%3Abuilds"


def test_keys_live_under_the_prefix_and_do_not_collide() -> None:
    keys = Keys("aibrix:staging")
    every = {
        keys.releases,
        keys.active_run("v1"),
        keys.runs("v1"),
        keys.run("v1", "r1"),
        keys.builds("v1", "r1"),
        keys.indexes("v1", "r1"),
        keys.merges("v1", "r1"),
        keys.approvals("v1", "r1"),
        keys.promotions("v1", "r1"),
        keys.events,
        keys.audit,
        keys.job_stream(ARM),
        keys.job_stream(AMD),
        keys.control_stream,
        keys.dead_letters,
        keys.job_streams,
        keys.retry_schedule(keys.job_stream(ARM)),
        keys.retry_data(keys.job_stream(ARM)),
        keys.retry_schedule(keys.control_stream),
        keys.pending("abc"),
        keys.done("abc"),
        keys.cancelled("v1", "r1"),
    }
    assert len(every) == 22
    assert all(key.startswith("aibrix:staging:") for key in every)
    assert keys.job_stream(ARM) == "aibrix:staging:jobs:linux_arm64"
    assert keys.job_stream(None) == keys.control_stream
    # A version that looks like a key suffix stays inside its own segment.
    assert keys.run("v1:run:r1", "x") != keys.builds("v1", "r1")


def test_keys_refuse_what_is_not_theirs() -> None:
    with pytest.raises(ValueError, match="not a platform"):
        Keys().job_stream("control")
    with pytest.raises(ValueError, match="not a job stream"):
        Keys().retry_schedule("other:jobs:linux_arm64")
    with pytest.raises(ValueError, match="not a job stream"):
        Keys().retry_schedule(Keys().dead_letters)
    for bad in ("", "a b", "trailing:", ":lead"):
        with pytest.raises(ValueError, match="key prefix"):
            Keys(bad)


# Pure: connection settings ------------------------------------------------------------


def test_from_dsn_reads_every_part() -> None:
    settings = RedisSettings.from_dsn("rediss://bot:s3cr%40t@redis.example:6390/2")
    assert (settings.host, settings.port, settings.database) == ("redis.example", 6390, 2)
    assert (settings.username, settings.password, settings.ssl) == ("bot", "s3cr@t", True)
    defaults = RedisSettings.from_dsn("redis://localhost", key_prefix="x")
    assert (defaults.port, defaults.database, defaults.password) == (6379, 0, None)
    assert defaults.keys == Keys("x")


def test_password_never_shows() -> None:
    settings = RedisSettings.from_dsn("redis://:hunter2@h:1/0")
    for text in (repr(settings), str(settings), settings.dsn):
        assert "hunter2" not in text
    assert settings.dsn == "redis://:***@h:1/0"
    assert redact_url("redis://u:hunter2@h:1/0") == "redis://u:***@h:1/0"
    assert redact_url("redis://hunter2@h/0") == "redis://***@h/0"
    assert "hunter2" not in redact_url("hunter2")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://:hunter2@h:1/0", "must start with redis://"),
        ("redis://:hunter2@h:99999/0", "does not parse"),
        ("redis://:hunter2@h:1/zero", "database number"),
        ("redis://:hunter2@:1/0", "no host"),
        ("redis://:hunter2@h:1/0?db=3", "query parameters"),
        ("redis://:hunter2@h:notaport/0", "does not parse"),
    ],
)
def test_bad_urls_say_why_without_the_password(url: str, message: str) -> None:
    with pytest.raises(RedisSettingsError, match=message) as caught:
        RedisSettings.from_dsn(url)
    assert "hunter2" not in str(caught.value)


async def test_connect_failure_is_clear_and_redacted() -> None:
    settings = RedisSettings.from_dsn(
        "redis://:hunter2@127.0.0.1:1/0", connect_timeout_s=1, retries=0
    )
    with pytest.raises(RedisConnectError, match=r"127\.0\.0\.1:1") as caught:
        await connect(settings)
    assert "hunter2" not in str(caught.value)


# Pure: backoff and job format ---------------------------------------------------------


@given(
    st.integers(min_value=1, max_value=10_000),
    st.floats(min_value=0, max_value=1e6),
    st.floats(min_value=0, max_value=1e9),
)
def test_backoff_doubles_until_the_cap(attempt: int, base: float, cap: float) -> None:
    delay = backoff_seconds(attempt, base, cap)
    assert 0 <= delay <= cap
    assert delay <= backoff_seconds(attempt + 1, base, cap)  # never shrinks
    assert backoff_seconds(1, base, cap) == min(base, cap)
    if attempt < 60 and base * 2 ** (attempt - 1) <= cap:
        assert math.isclose(delay, base * 2 ** (attempt - 1))


def test_backoff_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        backoff_seconds(0, 1, 10)
    with pytest.raises(ValueError):
        backoff_seconds(1, -1, 10)
    assert backoff_seconds(3, 5, 300) == 20
    assert backoff_seconds(10**9, 5, 300) == 300


@given(st.floats(min_value=0, max_value=1e6), st.floats(0, 1), st.floats(0, 1))
def test_jitter_only_shortens_and_by_at_most_the_fraction(
    delay: float, fraction: float, unit: float
) -> None:
    assert delay * (1 - fraction) - 1e-9 <= jittered(delay, fraction, unit) <= delay


_text = st.text(
    alphabet=st.characters(min_codepoint=32, max_codepoint=0x2FFF, exclude_categories=("Cs", "Cc")),
    min_size=1,
    max_size=40,
)


_versions = st.one_of(
    st.sampled_from(["v0.3.0-rc.2", "v1.0.0-x-y-z.--", "v1.0.0-0A.is.legal"]).map(parse_version),
    st.builds(Version, *(st.integers(min_value=0, max_value=10**6) for _ in range(3))),
)


@st.composite
def jobs(draw: st.DrawFn) -> Job:
    kind = draw(st.sampled_from(list(JobKind)))
    text = draw(st.sampled_from([ARM, AMD, "linux/arm/v7", None]))
    if kind is JobKind.BUILD and text is None:
        text = ARM
    platform = None if text is None else parse_platform(text)
    return Job(
        kind=kind,
        version=draw(_versions),
        component=draw(_text),
        source_revision=draw(_text),
        platform=platform,
        run_id=draw(st.one_of(st.just(""), _text)),
        attempt=draw(st.integers(min_value=1, max_value=1000)),
        payload=draw(st.dictionaries(st.text(max_size=20), st.text(max_size=50), max_size=5)),
    )


@given(jobs())
def test_job_round_trips_through_stream_fields(job: Job) -> None:
    fields = job.to_fields()
    assert list(fields) == ["job"] and isinstance(fields["job"], str)
    assert Job.from_fields(fields) == job
    assert job.next_attempt().idempotency_key == job.idempotency_key


@given(jobs(), st.sampled_from(["kind", "release", "run_id", "component", "source_revision"]))
def test_idempotency_key_changes_with_every_identity_field(job: Job, name: str) -> None:
    parts: dict[str, Any] = {
        "kind": job.kind.value,
        "release": str(job.version),
        "run_id": job.run_id,
        "component": job.component,
        "platform": None if job.platform is None else str(job.platform),
        "source_revision": job.source_revision,
    }
    assert idempotency_key(**parts) == job.idempotency_key
    parts[name] = parts[name] + "x"
    assert idempotency_key(**parts) != job.idempotency_key


def _document(**change: Any) -> dict[str, str]:
    doc = {**_job().to_document(), **change}
    return {"job": json.dumps(doc)}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"attempt": "2"}, "attempt"),
        ({"attempt": 0}, "attempt"),
        ({"attempt": True}, "attempt"),
        ({"payload": [1]}, "payload is not an object"),
        ({"payload": {"a": 1}}, "strings to strings"),
        ({"kind": "deploy"}, "kind"),
        ({"platform": "linux/aarch64"}, "must be written linux/arm64"),
        ({"platform": "linux"}, "not a platform"),
        ({"platform": None}, "build job needs a platform"),
        ({"platform": 64}, "platform must be a string"),
        ({"release": ""}, "release is empty"),
        ({"release": 1}, "release must be a string"),
        ({"release": "v1\n"}, "control characters"),
        ({"idempotency_key": "0" * 32}, "idempotency key does not match"),
        ({"v": "2"}, "format"),
        ({"id": "no spaces please"}, "job id"),
    ],
)
def test_job_fields_are_validated(change: dict[str, Any], message: str) -> None:
    with pytest.raises(JobFormatError, match=message):
        Job.from_fields(_document(**change))


@pytest.mark.parametrize("text", ["v1.0", "1.0.0", "v1.0.0+build.1", "v01.0.0", "V1.0.0"])
def test_a_job_whose_release_is_not_a_version_is_refused_even_with_a_matching_key(
    text: str,
) -> None:
    # Written by a buggy or hostile writer that kept the key consistent: the key check
    # alone would pass it, and the core would get text where it needs a Version.
    doc = _job().to_document()
    doc["release"] = text
    doc["idempotency_key"] = idempotency_key(
        doc["kind"], text, doc["run_id"], doc["component"], doc["platform"], doc["source_revision"]
    )
    with pytest.raises(JobFormatError, match="job release: "):
        Job.from_fields({"job": json.dumps(doc)})


def test_a_job_read_back_carries_typed_values() -> None:
    job = Job.from_fields(_job().to_fields())
    assert job.version == parse_version("v0.3.0-rc.2")
    assert job.platform == parse_platform("linux/arm64")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "no 'job' field"),
        ({"job": "{"}, "not JSON"),
        ({"job": "[]"}, "not a JSON object"),
    ],
)
def test_unreadable_entries_are_refused(fields: dict[str, str], message: str) -> None:
    with pytest.raises(JobFormatError, match=message):
        Job.from_fields(fields)


def test_job_fields_missing() -> None:
    doc = _job().to_document()
    del doc["source_revision"]
    with pytest.raises(JobFormatError, match="missing: source_revision"):
        Job.from_fields({"job": json.dumps(doc)})
