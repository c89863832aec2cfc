"""The registry reads the Slack handlers ask for, as one named service.

`/aibrix inspect` reads a reference and judges its platforms; `/aibrix plan` reads the
source and the dependency images; an approval click re-reads the dependency images and,
with a Slack sync, each component's release tag (what it holds now, whether the platform
check still passes, or that the registry could not be read, which proves nothing). The
handlers are handed an `Inspector` (built by the bot) instead of opening registry clients
themselves, so the Slack adapter holds no registry settings and no client lifecycle.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from jobs.domain.approvals import TagReading, publish_key
from jobs.domain.component_card import ComponentCard
from jobs.domain.config import Config
from jobs.domain.nightly import release_tag
from jobs.domain.plan import Plan
from jobs.domain.platforms import Platform
from jobs.domain.references import Reference, parse_reference
from jobs.domain.release import Release
from jobs.domain.verdict import Outcome
from jobs.domain.versions import Version
from jobs.registry.client import NotFoundError, RegistryClient, RegistryError, RegistrySettings
from jobs.registry.inspection import Inspection, inspect_reference
from jobs.usecases.component_card import card_settings, read_card
from jobs.usecases.plan import DependencyGate, dependency_gate, make_plan


@dataclass
class Inspector:
    """Registry reads for the handlers: one client per call, closed when it returns."""

    settings: RegistrySettings
    config: Config

    async def inspect(self, reference: Reference) -> Inspection:
        """`reference` read back and judged against the configured platforms."""
        async with RegistryClient(self.settings) as client:
            return await inspect_reference(client, reference, self.config.platforms)

    async def card(
        self, component: str, releases: Sequence[Release], *, only_tag: str | None = None
    ) -> ComponentCard:
        """`component`'s card (`/aibrix inspect COMPONENT`): its tags on every registry
        and mirror; with `only_tag`, that one tag everywhere."""
        async with RegistryClient(card_settings(self.settings)) as client:
            return await read_card(client, self.config, component, releases, only_tag=only_tag)

    async def plan(
        self, version: Version, components: Sequence[str], platforms: Sequence[Platform]
    ) -> Plan:
        """The plan of a release (`/aibrix plan`): read-only."""
        return await make_plan(self.config, version, components, platforms, registry=self.settings)

    async def dependencies(self, release: Release) -> DependencyGate:
        """The run's dependency images read again for every required platform."""
        return await dependency_gate(
            self.config,
            release.version,
            release.components,
            release.platforms,
            release.source_ref,
            self.settings,
        )

    async def release_tags(self, release: Release) -> dict[str, TagReading]:
        """Each component's release tag of `release` read again (see `TagReading`), keyed
        by component on the primary and by `LOCATION/COMPONENT` on every other publish
        registry (`jobs.domain.approvals.publish_expected` keys the digests alike)."""
        keys: list[str] = list(release.components)
        refs = [
            parse_reference(self.config.release_reference(c, release.version))
            for c in release.components
        ]
        for location in self.config.secondary_publish:
            for component in release.components:
                key = publish_key(location, component)
                keys.append(key)
                refs.append(parse_reference(f"{key}:{release_tag(release.version)}"))
        async with RegistryClient(self.settings) as client:
            readings = await asyncio.gather(*(self._read_tag(client, ref) for ref in refs))
        return dict(zip(keys, readings, strict=True))

    async def _read_tag(self, client: RegistryClient, ref: Reference) -> TagReading:
        try:
            top = await client.get_manifest(ref)
        except NotFoundError:
            return TagReading(None)  # the registry answered: the tag is gone
        except RegistryError:
            return TagReading(None, unreadable=True)
        inspection = await inspect_reference(client, ref, self.config.platforms)
        if inspection.digest is None:
            return TagReading(None, unreadable=True)  # it answered once, then not
        if inspection.digest != top.digest:
            return TagReading(inspection.digest)  # it moved between the two reads
        failed = inspection.verdict.outcome is not Outcome.OK
        if failed and not await _children_readable(client, ref, inspection):
            return TagReading(inspection.digest, unreadable=True)
        return TagReading(inspection.digest, check_failed=failed)


async def _children_readable(
    client: RegistryClient, ref: Reference, inspection: Inspection
) -> bool:
    """Whether the entries the platform check could not resolve were answered by the
    registry (gone: a proven change) rather than left unanswered (a hiccup)."""
    for entry in inspection.verdict.entries:
        if entry.actual is not None:
            continue
        try:
            await client.get_manifest(ref.with_digest(entry.digest))
        except NotFoundError:
            continue
        except RegistryError:
            return False
    return True
