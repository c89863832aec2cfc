"""Every Redis key name the project uses, built from one configurable prefix.

Nothing else in the codebase writes a literal key: callers ask a `Keys` for the key.
User-supplied parts (version, component, platform, run id) go through `segment`, which
escapes `:` and anything unusual, so a version such as `v1:builds` can never address
another key, and `linux/arm64` becomes the readable `linux_arm64`.

Layout (P = prefix, default `aibrix`):

    P:releases                          zset    version -> time its latest run was created
    P:release:<v>:active                string  run id of the version's current run
    P:release:<v>:runs                  zset    run ids of the version -> creation time
    P:release:<v>:record                hash    the version's immutable record: the digest
                                                each component's release tag was last written
                                                with (and whether verified), and once
                                                promoted: by whom, when, which digests.
                                                Bounded (a few fields per component) and
                                                never expires
    P:release:<v>:run:<r>               hash    the run record (state, who, where, what)
    P:release:<v>:run:<r>:builds        hash    "<component>@<platform>" -> build record JSON
    P:release:<v>:run:<r>:indexes       hash    component -> index digest and verdict JSON
    P:release:<v>:run:<r>:merges        hash    component -> who claimed its merge
    P:release:<v>:run:<r>:approvals     hash    user -> approval JSON
    P:release:<v>:run:<r>:promotions    hash    target -> promotion result JSON
    P:events                            stream  every change, for the Slack notifier
    P:audit                             stream  who asked, approved, rejected, cancelled
    P:jobs:<platform>                   stream  build jobs for one platform (linux_arm64)
    P:jobs:control                      stream  merge, verify, promote, sync jobs
    P:jobs:<stream>:retry               zset    job id -> due time (ms) of a delayed retry
    P:jobs:<stream>:retry-data          hash    job id -> the retry's stream fields
    P:jobs:dead                         stream  jobs that ran out of attempts, with reason
    P:jobs:streams                      set     every job stream ever written (for cancel)
    P:job:pending:<idempotency key>     string  job id while that job is queued or running
    P:job:done:<idempotency key>        string  the recorded result of a finished job
    P:cancel:<v>:<r>                    string  set when a run is cancelled; workers poll it
    P:slack:delivery:<sha256>           string  a Slack delivery already handled (TTL)
    P:notifier:cursor                   string  last events-stream id the notifier has shown
    P:sync:<job id>                     hash    one Slack sync of a version to a mirror (TTL)
    P:audit-once:<sha256>               string  a refusal already audited (TTL: an hour for
                                                a sync, the run's retention for a click)
    P:fleet:worker:<id>@<platform>      string  one live worker's heartbeat JSON (TTL: a
                                                killed worker drops out on its own)
    P:fleet:workers                     zset    "<id>@<platform>" -> last heartbeat (unix
                                                s), to list the records; pruned after a week
    P:fleet:platforms                   hash    platform -> last heartbeat of any worker of
                                                it (bounded by the platforms ever run)

Retention: a run's detail (`run:<r>` and every `run:<r>:*` key) expires a configured
time (`[queue] retention_days`, default 90) after the run settles (promoted, failed,
cancelled or blocked); what immutability and the audit need stays in `record`.

Leases are not keys: a job's lease is its entry in the stream's pending entries list
(owner and idle time), see `jobs.store.queue`.
"""

from __future__ import annotations

import functools
import hashlib
import re
import string
from dataclasses import dataclass

from jobs.domain.versions import Version

DEFAULT_PREFIX = "aibrix"

# The consumer group every worker of a stream joins; a group name, not a key.
CONSUMER_GROUP = "workers"

_SAFE = frozenset(string.ascii_letters + string.digits + ".-@+")
_PLAIN = re.compile(r"^[A-Za-z0-9.\-@+]+\Z")
_PREFIX = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:\-]{0,63}\Z")


@functools.lru_cache(maxsize=4096)  # pure, and on every queue operation's path
def segment(text: str) -> str:
    """`text` as one key segment: an injective escape, so different inputs never meet.

    `/` becomes `_` (platforms stay readable); `_`, `:`, `%` and anything else outside
    letters, digits and `.-@+` become `%XX` (UTF-8 bytes).
    """
    if not text:
        raise ValueError("a key segment cannot be empty")
    if _PLAIN.match(text):
        return text
    out: list[str] = []
    for char in text:
        if char in _SAFE:
            out.append(char)
        elif char == "/":
            out.append("_")
        else:
            out.extend(f"%{byte:02X}" for byte in char.encode())
    return "".join(out)


def check_prefix(prefix: str) -> str:
    if not _PREFIX.match(prefix) or prefix.endswith(":"):
        raise ValueError(
            f"key prefix {prefix!r} is not usable: use letters, digits, '.', '_', '-' or ':' "
            "(not at the end), at most 64 characters, such as 'aibrix' or 'aibrix:staging'"
        )
    return prefix


@dataclass(frozen=True)
class Keys:
    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        check_prefix(self.prefix)

    # Releases -------------------------------------------------------------------------

    @property
    def releases(self) -> str:
        return f"{self.prefix}:releases"

    def _release(self, version: Version | str) -> str:
        return f"{self.prefix}:release:{segment(str(version))}"

    def active_run(self, version: Version | str) -> str:
        return f"{self._release(version)}:active"

    def runs(self, version: Version | str) -> str:
        return f"{self._release(version)}:runs"

    def record(self, version: Version | str) -> str:
        """The version's immutable record (never expires, bounded)."""
        return f"{self._release(version)}:record"

    def run(self, version: Version | str, run_id: str) -> str:
        return f"{self._release(version)}:run:{segment(run_id)}"

    def builds(self, version: Version | str, run_id: str) -> str:
        return f"{self.run(version, run_id)}:builds"

    def indexes(self, version: Version | str, run_id: str) -> str:
        """Per component index digest and platform verdict."""
        return f"{self.run(version, run_id)}:indexes"

    def merges(self, version: Version | str, run_id: str) -> str:
        """Merge-claimed markers: one field per component whose merge has been claimed."""
        return f"{self.run(version, run_id)}:merges"

    def approvals(self, version: Version | str, run_id: str) -> str:
        return f"{self.run(version, run_id)}:approvals"

    def promotions(self, version: Version | str, run_id: str) -> str:
        return f"{self.run(version, run_id)}:promotions"

    def overwrites(self, version: Version | str, run_id: str) -> str:
        """Mirror targets an approver confirmed overwriting -> the digest they held."""
        return f"{self.run(version, run_id)}:overwrites"

    def run_detail(self, version: Version | str, run_id: str) -> list[str]:
        """Every key of one run's detail: what expires once the run is settled."""
        return [
            self.run(version, run_id),
            self.builds(version, run_id),
            self.indexes(version, run_id),
            self.merges(version, run_id),
            self.approvals(version, run_id),
            self.promotions(version, run_id),
            self.overwrites(version, run_id),
            self.failure_replies(version, run_id),
        ]

    @property
    def events(self) -> str:
        return f"{self.prefix}:events"

    @property
    def audit(self) -> str:
        return f"{self.prefix}:audit"

    # Jobs -----------------------------------------------------------------------------

    def job_stream(self, platform: str | None) -> str:
        """The stream for jobs of `platform` (`linux/arm64`), or the control stream for None."""
        if platform is None:
            return self.control_stream
        if "/" not in platform:
            # Platform segments always contain `_`, so they never meet control/dead/streams.
            raise ValueError(f"{platform!r} is not a platform such as linux/arm64")
        return f"{self.prefix}:jobs:{segment(platform)}"

    @property
    def control_stream(self) -> str:
        return f"{self.prefix}:jobs:control"

    @property
    def dead_letters(self) -> str:
        return f"{self.prefix}:jobs:dead"

    @property
    def job_streams(self) -> str:
        """Set of every job stream written to, so cancel can find queued jobs."""
        return f"{self.prefix}:jobs:streams"

    def retry_schedule(self, stream: str) -> str:
        return f"{self._own_stream(stream)}:retry"

    def retry_data(self, stream: str) -> str:
        return f"{self._own_stream(stream)}:retry-data"

    def pending(self, idempotency_key: str) -> str:
        """Held while a job with this idempotency key is queued, delayed or running."""
        return f"{self.prefix}:job:pending:{segment(idempotency_key)}"

    def done(self, idempotency_key: str) -> str:
        return f"{self.prefix}:job:done:{segment(idempotency_key)}"

    def cancelled(self, version: Version | str, run_id: str) -> str:
        # Jobs outside a run (run id "") get their own flag; segment() is never empty.
        run = segment(run_id) if run_id else ""
        return f"{self.prefix}:cancel:{segment(str(version))}:{run}"

    # The Slack bot ----------------------------------------------------------------------

    def slack_delivery(self, identity: str) -> str:
        """Claimed (with a TTL) by the first handling of one Slack delivery: a command's
        trigger_id, a click's message and action_ts. Hashed: the identity is Slack's text
        of any length, and only equality matters."""
        if not identity:
            raise ValueError("a delivery identity cannot be empty")
        digest = hashlib.sha256(identity.encode("utf-8")).hexdigest()[:40]
        return f"{self.prefix}:slack:delivery:{digest}"

    @property
    def status_outbox(self) -> str:
        """A set of `version run_id`: runs started from Slack whose live message is not
        posted yet. Written with the run, emptied when its message is recorded; the
        notifier posts what is left (a bot killed mid-post)."""
        return f"{self.prefix}:slack:status-outbox"

    def status_post(self, version: Version | str, run_id: str) -> str:
        """Claimed, with a short lease, by whoever is posting the run's live message."""
        return f"{self.run(version, run_id)}:post"

    def status_post_tried(self, version: Version | str, run_id: str) -> str:
        """Set before the first chat.postMessage of the run's live message: a later poster
        finding it looks in the channel for that message before posting again."""
        return f"{self.run(version, run_id)}:post-tried"

    def failure_replies(self, version: Version | str, run_id: str) -> str:
        """A set of `component@platform`: the run's failures whose thread reply is claimed,
        so a second bot replica, or a restart replaying events, does not reply again."""
        return f"{self.run(version, run_id)}:replied"

    @property
    def notifier_leader(self) -> str:
        """The lease of the one notifier (of several bot replicas) that sends updates."""
        return f"{self.prefix}:notifier:leader"

    def sync(self, job_id: str) -> str:
        """One sync of a version to a mirror asked from Slack: who, where, its progress
        and outcome, and where its live message is (see `jobs.usecases.sync_job`)."""
        return f"{self.prefix}:sync:{segment(job_id)}"

    def audit_once(self, identity: str) -> str:
        """Held (with a TTL) once a repeatable refusal is audited, so that the same user
        repeating it does not push real records out of the capped audit stream."""
        digest = hashlib.sha256(identity.encode("utf-8")).hexdigest()[:40]
        return f"{self.prefix}:audit-once:{digest}"

    @property
    def notifier_cursor(self) -> str:
        """The events-stream id up to which the notifier has shown every event."""
        return f"{self.prefix}:notifier:cursor"

    # The fleet of workers (see `jobs.store.fleet`) ----------------------------------------

    def fleet_worker(self, member: str) -> str:
        """One worker's heartbeat record; `member` is `<id>@<platform>`."""
        return f"{self.prefix}:fleet:worker:{segment(member)}"

    @property
    def fleet_workers(self) -> str:
        return f"{self.prefix}:fleet:workers"

    @property
    def fleet_platforms(self) -> str:
        return f"{self.prefix}:fleet:platforms"

    def _own_stream(self, stream: str) -> str:
        head = f"{self.prefix}:jobs:"
        name = stream.removeprefix(head)
        if not stream.startswith(head) or ":" in name or (name != "control" and "_" not in name):
            raise ValueError(f"{stream!r} is not a job stream under prefix {self.prefix!r}")
        return stream
