"""`/aibrix nightly [BRANCH]` and `aibrix-bot nightly [BRANCH]`: build the head of a
branch (default `main`) as a run of the release pipeline, so it gets the same
per-architecture workers, merge, platform gate and binary check as a release.

The branch is validated as a git ref name (never an option) and resolved to its head
commit once, here; the run builds exactly that commit (`jobs.domain.nightly`). Its tags
are the full commit sha, written by the merge like a release tag, and `nightly`, written
by the promotion, which a nightly that passed the gate gets without an approval
(`Pipeline.settle`), unless `[nightly] approval = true`. A run that fails the gate never
promotes: the previous `nightly` stays, and the run's reason says why.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from jobs.domain import messages
from jobs.domain.nightly import BranchError, nightly_version, parse_branch
from jobs.domain.release import Release, State
from jobs.tools.source import SourceError, branch_head
from jobs.usecases.pipeline import CLI_CHANNEL, Pipeline, ReleaseInputError, ReleasePlan


@dataclass(frozen=True)
class NightlyRequest:
    branch: str
    revision: str
    plan: ReleasePlan


async def plan_nightly(pipeline: Pipeline, branch_text: str | None) -> NightlyRequest:
    """Validate the branch (`ReleaseInputError`, nothing touched), then resolve its head
    (`SourceError` when the source cannot be read or has no such branch)."""
    config = pipeline.config
    try:
        branch = parse_branch(branch_text)
    except BranchError as error:
        raise ReleaseInputError(str(error)) from None
    revision = await asyncio.to_thread(branch_head, config.source, branch)
    version = nightly_version(revision)
    components = config.at(version).component_names
    return NightlyRequest(branch, revision, ReleasePlan(version, components, config.platforms))


async def request_nightly(
    pipeline: Pipeline,
    request: NightlyRequest,
    requested_by: str,
    channel: str = CLI_CHANNEL,
    *,
    request_id: str = "",
) -> tuple[Release, bool]:
    """Start the nightly run (or return the commit's run already going): the same
    request path as a release, so the plan's checks refuse a missing path first. A head
    already published as nightly is answered as such (`ReleaseInputError`)."""
    done = await pipeline.find_run(request.plan.version)
    if done is not None and done.state is State.PROMOTED:
        raise ReleaseInputError(messages.nightly_already(request.branch, request.revision))
    return await pipeline.request_release(
        request.plan, requested_by, channel, request_id=request_id
    )


__all__ = ["NightlyRequest", "SourceError", "plan_nightly", "request_nightly"]
