"""Released versions are immutable: the pure decisions that keep them so.

A release tag, once written and verified, is never rewritten by a later run of the same
version. The merge reads the tag first and compares what it holds with what this
version's runs last wrote there (the version's record, `Keys.record`): a tag holding
that verified digest is kept, a tag holding anything this version did not write is
left alone and the run blocks, naming both digests. The registry offers no conditional
write, so this compare-and-set is on the registry read just before the write.

A promoted version takes no new run at all, unless an approver supersedes it (audited).
Pure: the caller reads the registry and Redis, and does what the decision says.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from jobs.domain import messages
from jobs.domain.release import Promoted, TagWrite


class TagAction(StrEnum):
    WRITE = "write"  # nothing verified is there: write the index from this run's digests
    KEEP = "keep"  # the tag holds this version's verified digest: keep it, write nothing
    ADOPT = "adopt"  # the tag already holds exactly this run's pinned builds: nothing to write
    REFUSE = "refuse"  # the tag holds what this version did not write: block, write nothing


@dataclass(frozen=True)
class TagDecision:
    action: TagAction
    reason: str = ""  # the sentence for a refusal (or a kept tag)


def decide_tag_write(
    subject: str,
    held: str | None,
    wrote: TagWrite | None,
    *,
    holds_this_run: bool = False,
    supersede: bool = False,
) -> TagDecision:
    """What the merge may do with a release tag.

    `held`: the digest the tag holds now (None: the registry says there is no such tag);
    `wrote`: what this version's runs last wrote there (None: never);
    `holds_this_run`: the tag's children are exactly this run's pinned builds (a
    redelivered merge that crashed after writing, before recording);
    `supersede`: an approver's audited emergency override: write whatever is there.
    """
    if supersede:
        return TagDecision(TagAction.WRITE)
    if held is None:
        if wrote is not None and wrote.verified:
            return TagDecision(TagAction.REFUSE, messages.tag_removed(subject, wrote.digest))
        return TagDecision(TagAction.WRITE)
    if wrote is not None and wrote.digest == held:
        if wrote.verified:
            return TagDecision(TagAction.KEEP, messages.tag_kept(subject, held))
        return TagDecision(TagAction.WRITE)  # this version's own, never verified: redo it
    if holds_this_run and (wrote is None or not wrote.verified):
        return TagDecision(TagAction.ADOPT)
    return TagDecision(
        TagAction.REFUSE,
        messages.tag_changed_by_someone_else(subject, held, wrote.digest if wrote else None),
    )


def release_refusal(version: str, promoted: Promoted | None, *, supersede: bool) -> str | None:
    """Why a new run of `version` is refused (it was promoted), or None."""
    if promoted is None or supersede:
        return None
    return messages.release_immutable(
        version, promoted.by, promoted.at, sorted(promoted.digests.items())
    )
