"""The release's dependency images go to the mirrors with its promotion (issue 13 item 5):
redis, envoy, kuberay-operator and the rest, which AIBrix mirrored by hand with `docker
pull --platform linux/amd64` (one platform, no `set -e`). Here they go through the sync
engine like the release itself: gated on every required platform (a dependency without
arm64 is refused with the reason, nothing written for it), every digest preserved, a
mirror tag holding another digest left alone and reported.

Run by promotion (`jobs.usecases.promote`) after the release's own images reached the
promotion mirrors. The mirrors are configured names only (`promotion.mirrors`).
"""

from __future__ import annotations

from jobs.domain import messages
from jobs.domain.config import Config
from jobs.domain.release import Release
from jobs.domain.sync_request import dependency_jobs, resolve_mirrors
from jobs.registry.client import RegistryClient
from jobs.store.releases import ReleaseStore
from jobs.tools.source import SourceError
from jobs.usecases.plan import dependency_references
from jobs.usecases.sync import sync_jobs

WHERE = "worker"


async def sync_dependencies(
    store: ReleaseStore, config: Config, release: Release, client: RegistryClient
) -> list[str]:
    """Copy the run's dependency images to every promotion mirror; one sentence per
    failure (the gate's refusal, a copy that failed or was refused). Each copy is recorded
    with the promotion's outcomes and audited."""
    if not config.promotion.mirrors:
        return []
    try:
        references = await dependency_references(
            config, release.version, release.components, release.source_ref
        )
    except SourceError as error:
        return [messages.dependencies_not_synced(str(release.version), [str(error)])]
    if not references:
        return []
    mirrors = resolve_mirrors(config, config.promotion.mirrors)
    jobs = dependency_jobs(references, mirrors)
    report = await sync_jobs(client, jobs, config.platforms, version=str(release.version))
    if not report.gate_passed:
        sentences = [sentence for problem in report.gate for sentence in problem.sentences]
        return [messages.dependencies_not_synced(str(release.version), sentences)]
    failures: list[str] = []
    for mirror in report.mirrors:
        for item in mirror.components:
            detail = "" if item.ok else (item.reason or item.status.value)
            await store.record_promotion(
                release.version,
                release.run_id,
                item.destination,
                ok=item.ok,
                digest=item.final_digest or "",
                detail=detail,
            )
            if item.ok:
                await store.audit(
                    release.version,
                    release.run_id,
                    release.requested_by,
                    "dependency-synced",
                    f"{item.source} -> {item.destination} {item.final_digest}",
                    WHERE,
                )
            else:
                failures.append(messages.promotion_failed(item.destination, detail))
    return failures
