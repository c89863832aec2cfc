"""The pure and local parts of issue 16 items 1, 2 and 7: when a lease is given up, the
[queue] keys for renewal and idle consumers, the spool file (atomic, read back whole,
an unreadable one set aside), and metadata directories removed on every way out."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from jobs.domain.config import ConfigError
from jobs.domain.config_reader import parse_config
from jobs.domain.platforms import parse_platform
from jobs.domain.versions import parse_version
from jobs.runtime.lease import give_up_at
from jobs.runtime.results import Spool, SpooledResult
from jobs.store.queue import Job, JobKind, Lease, QueueTuning
from jobs.tools.build import METADATA_PREFIX, metadata_dir, sweep_metadata_dirs
from tests.support.config import doc

NOWHERE = Path("/nonexistent/aibrix.toml")


def test_a_lease_is_given_up_before_it_runs_out_by_time_enough_to_stop() -> None:
    assert give_up_at(100.0, 60.0, 20.0) == 150.0
    assert give_up_at(0.0, 6.0, 2.0) == 5.0
    assert give_up_at(0.0, 1.0, 0.1) == 0.75  # at least a quarter second
    assert give_up_at(0.0, 0.2, 0.1) == 0.1  # never more than half the lease
    for lease in (0.2, 1.0, 6.0, 60.0, 3600.0):
        interval = QueueTuning(lease_ms=int(lease * 1000)).renew_interval_s
        assert 0 < give_up_at(0.0, lease, interval) < lease


def test_renew_and_idle_consumer_keys_are_read_and_checked() -> None:
    text = doc(extra="[queue]\nlease_seconds = 10\nrenew_seconds = 2\nconsumer_idle_seconds = 5\n")
    queue = parse_config(text, NOWHERE).queue
    assert (queue.renew_seconds, queue.consumer_idle_seconds) == (2.0, 5)
    tuning = QueueTuning.from_settings(queue)
    assert (tuning.renew_interval_s, tuning.consumer_idle_ms) == (2.0, 5000)
    assert QueueTuning.from_settings(parse_config(doc(), NOWHERE).queue).renew_interval_s == 20
    with pytest.raises(ConfigError) as caught:
        parse_config(doc(extra="[queue]\nlease_seconds = 10\nrenew_seconds = 6\n"), NOWHERE)
    assert caught.value.key == "queue.renew_seconds"
    assert "more than half of lease_seconds (10)" in str(caught.value)


def _lease() -> Lease:
    job = Job(
        kind=JobKind.BUILD,
        version=parse_version("v1.0.0"),
        component="runtime",
        source_revision="abc",
        platform=parse_platform("linux/amd64"),
        run_id="r1",
    )
    return Lease(job, "aibrix:jobs:linux/amd64", "1-0", "w1:linux/amd64:0", 2, reclaimed=True)


def test_a_spooled_result_reads_back_whole_and_a_bad_file_is_set_aside(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    lease = _lease()
    path = spool.write(lease, "sha256:" + "a" * 64)
    assert [p.name for p in (tmp_path / "spool").iterdir()] == [path.name]  # no temp file left
    (tmp_path / "spool" / "garbage.json").write_text("{not json")
    found = spool.pending()
    results = [f for f in found if isinstance(f, SpooledResult)]
    assert len(results) == 1 and results[0].job == lease.job
    assert results[0].lease().fence == lease.fence and results[0].digest == "sha256:" + "a" * 64
    [bad] = [f for f in found if isinstance(f, Path)]
    spool.set_aside(bad)
    spool.done(path)
    assert [p.name for p in (tmp_path / "spool").iterdir()] == ["garbage.unreadable"]
    assert Spool(tmp_path / "absent").pending() == []


def test_metadata_dirs_go_on_every_way_out_and_a_dead_workers_are_swept(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), metadata_dir(tmp_path) as made:
        (made / "metadata.json").write_text("{}")
        raise RuntimeError("the build failed")
    assert not made.exists()
    # One of a process that is gone (pid far beyond pid_max), one of ours (alive).
    dead = tmp_path / f"{METADATA_PREFIX}4999999-abc"
    dead.mkdir()
    ours = tmp_path / f"{METADATA_PREFIX}{os.getpid()}-def"
    ours.mkdir()
    assert sweep_metadata_dirs(tmp_path) == 1
    assert not dead.exists() and ours.exists()
