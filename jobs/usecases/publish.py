"""One build, every registry: the verified index of a component, merged once into the
primary publish registry, copied to every other publish registry with the sync engine
(the same gated, digest-preserving copy mirrors get), and the promotion tags written on
each of them from those same bytes.

Why a copy and not a second build or merge: a second build gives the same tag two
digests on two registries (AIBrix's own workflows do that); a copy of the manifest bytes
and blobs keeps every digest, so one approval binds every registry.

Called by the merge (`Pipeline.merge`, after the platform gate and the binary check
passed on the primary) and by promotion (`jobs.usecases.promote`). Every write goes
to a registry the config names (`publish`), never to one a user typed; each is recorded
in the audit stream.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from jobs.domain import messages
from jobs.domain.config import Config
from jobs.domain.nightly import release_tag
from jobs.domain.references import parse_reference
from jobs.domain.release import Release
from jobs.domain.sync_report import ComponentStatus
from jobs.domain.sync_request import Mirror
from jobs.domain.versions import Version
from jobs.registry.client import NotFoundError, RegistryClient, RegistryError
from jobs.store.releases import ReleaseStore
from jobs.usecases.sync import sync_release

log = logging.getLogger("aibrix.publish")

PUBLISH_WHERE = "worker"


async def audit_tag_write(store: ReleaseStore, release: Release, target: str, digest: str) -> None:
    """Every tag a run writes is in the audit stream (`published`): on whose request (the
    run's requester), the tag and the digest it now holds."""
    await store.audit(
        release.version,
        release.run_id,
        release.requested_by,
        "published",
        f"{target} {digest}",
        PUBLISH_WHERE,
    )


def publish_targets(config: Config) -> tuple[Mirror, ...]:
    """The secondary publish registries as sync destinations (labelled by location)."""
    return tuple(Mirror(location, location.rstrip("/")) for location in config.secondary_publish)


async def copy_to_publish(
    store: ReleaseStore,
    client: RegistryClient,
    config: Config,
    release: Release,
    component: str,
    digest: str,
) -> list[str]:
    """Copy `component`'s verified index (`digest`, at the primary's release tag) to every
    other publish registry; one sentence per registry that does not end up holding that
    digest (a tag there holding another digest is not overwritten). Empty: all hold it."""
    targets = publish_targets(config)
    if not targets:
        return []
    version = release.version
    report = await sync_release(
        client,
        config,
        version,
        targets,
        components=[component],
        expected_digests={component: digest},
    )
    if not report.gate_passed:
        sentences = [sentence for problem in report.gate for sentence in problem.sentences]
        return [
            messages.publish_copy_failed(f"{t.location}/{component}:{release_tag(version)}", s)
            for t in targets
            for s in sentences
        ]
    problems: list[str] = []
    for mirror in report.mirrors:
        for item in mirror.components:
            if item.ok and item.final_digest == digest:
                if item.status is ComponentStatus.COPIED:  # written now, not already there
                    await audit_tag_write(store, release, item.destination, digest)
                continue
            reason = item.reason or messages.publish_holds_other(item.final_digest, digest)
            problems.append(messages.publish_copy_failed(item.destination, reason))
    return problems


async def publish_copy_problem(
    client: RegistryClient, location: str, component: str, version: Version, digest: str
) -> str | None:
    """Why a secondary publish registry cannot be promoted (None: it holds `digest` at the
    release tag): the index is missing there, or the tag holds another digest."""
    target = f"{location.rstrip('/')}/{component}:{release_tag(version)}"
    try:
        held: str | None = (await client.get_manifest(parse_reference(target))).digest
    except NotFoundError:
        held = None
    except RegistryError as error:
        return messages.publish_copy_failed(target, str(error))
    if held == digest:
        return None
    return messages.publish_copy_failed(target, messages.publish_holds_other(held, digest))


async def promote_on_publish(
    store: ReleaseStore, config: Config, release: Release, client: RegistryClient
) -> list[str]:
    """Write the promotion tags on every secondary publish registry, each from the bytes of
    the verified index there, after checking the release tag there holds that digest.
    One sentence per failure (the run then fails promotion with them)."""
    tags = config.promotion_tags_for(release.version)
    failures: list[str] = []
    for location in config.secondary_publish:
        repository_root = location.rstrip("/")
        for component in release.components:
            digest = release.indexes[component].digest
            problem = await publish_copy_problem(
                client, repository_root, component, release.version, digest
            )
            if problem is not None:
                failures.append(problem)
                continue
            if not tags:
                continue
            repository = f"{repository_root}/{component}"
            failures += await write_promotion_tags(store, release, client, repository, digest, tags)
    return failures


async def write_promotion_tags(
    store: ReleaseStore,
    release: Release,
    client: RegistryClient,
    repository: str,
    digest: str,
    tags: Sequence[str],
) -> list[str]:
    """The promotion `tags` in `repository`, each from the bytes of the verified index
    `digest` there, so each reads back as that digest; tags already written by this run
    are kept. Each write recorded, each good one audited; one sentence per failure."""
    try:
        manifest = await client.get_manifest(parse_reference(f"{repository}@{digest}"))
    except RegistryError as error:
        return [messages.promotion_failed(f"{repository}:{tags[0]}", str(error))]
    failures = []
    for tag in tags:
        target = f"{repository}:{tag}"
        done = release.promotions.get(target)
        if done is not None and done.ok:
            continue
        try:
            got = await client.put_manifest(
                parse_reference(target), manifest.raw, manifest.media_type
            )
            detail = "" if got == digest else f"it reads back as {got}"
        except RegistryError as error:
            got, detail = "", str(error)
        await store.record_promotion(
            release.version, release.run_id, target, ok=got == digest, digest=got, detail=detail
        )
        if got != digest:
            failures.append(messages.promotion_failed(target, detail))
        else:
            await audit_tag_write(store, release, target, digest)
    return failures
