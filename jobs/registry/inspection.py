"""The inspection engine: read a published reference back and judge its platforms.

For an index, every real entry's child manifest and image config are fetched
concurrently and the config's os/architecture/variant compared with the entry;
attestation manifests are counted apart. A tag that names a single image manifest
has the platform its config says.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from jobs.domain.manifests import Descriptor, ManifestError, parse_config_platform
from jobs.domain.platforms import Platform
from jobs.domain.references import Reference, parse_reference
from jobs.domain.verdict import EntryFacts, Verdict, judge, unreadable
from jobs.registry.client import RegistryClient, RegistryError


@dataclass(frozen=True)
class Inspection:
    reference: Reference
    digest: str | None  # what the reference resolved to
    media_type: str | None
    verdict: Verdict

    @property
    def unreadable(self) -> bool:
        """The reference itself could not be read (not found, unreachable, refused)."""
        return self.digest is None


async def _config_platform(client: RegistryClient, ref: Reference, config: Descriptor) -> Platform:
    raw = await client.get_blob(ref, config.digest)
    return parse_config_platform(raw)


async def _entry_facts(client: RegistryClient, ref: Reference, entry: Descriptor) -> EntryFacts:
    try:
        child = await client.get_manifest(ref.with_digest(entry.digest))
        if child.is_index or child.config is None:
            return EntryFacts(
                entry.digest, entry.platform, None, "the entry is an index, not an image"
            )
        actual = await _config_platform(client, ref, child.config)
    except RegistryError as error:
        return EntryFacts(entry.digest, entry.platform, None, error.message)
    except ManifestError as error:
        return EntryFacts(entry.digest, entry.platform, None, str(error))
    return EntryFacts(entry.digest, entry.platform, actual)


async def inspect_reference(
    client: RegistryClient, ref: Reference, required: Sequence[Platform]
) -> Inspection:
    try:
        top = await client.get_manifest(ref)
    except RegistryError as error:
        return Inspection(ref, None, None, unreadable(required, error.message))
    if not top.is_index:
        assert top.config is not None
        try:
            actual: Platform | None = await _config_platform(client, ref, top.config)
            problem = None
        except (RegistryError, ManifestError) as error:
            actual, problem = None, getattr(error, "message", str(error))
        facts = [EntryFacts(top.digest, None, actual, problem)]
        return Inspection(ref, top.digest, top.media_type, judge(required, facts, is_index=False))
    real = [e for e in top.manifests if not e.is_attestation]
    attestations = len(top.manifests) - len(real)
    facts = await asyncio.gather(*(_entry_facts(client, ref, e) for e in real))
    verdict = judge(required, facts, attestations=attestations, is_index=True)
    return Inspection(ref, top.digest, top.media_type, verdict)


async def inspect_many(
    client: RegistryClient, refs: Sequence[Reference], required: Sequence[Platform]
) -> list[Inspection]:
    """Inspect all references concurrently, each within the registry budget for one
    reference; results in argument order."""

    async def one(ref: Reference) -> Inspection:
        with client.reference_budget():
            return await inspect_reference(client, ref, required)

    return list(await asyncio.gather(*(one(r) for r in refs)))


def inspection_json(inspection: Inspection) -> dict[str, object]:
    """The `--json` object for one reference (an interface users' CI relies on)."""
    verdict = inspection.verdict
    return {
        "reference": str(inspection.reference),
        "digest": inspection.digest,
        "media_type": inspection.media_type,
        "verdict": verdict.outcome.value,
        "required": [str(p) for p in verdict.required],
        "missing": [str(p) for p in verdict.missing],
        "platforms": [
            {
                "platform": entry.label,
                "digest": entry.digest,
                "status": entry.status.value,
                "config_platform": str(entry.actual) if entry.actual else None,
                "reason": entry.reason,
            }
            for entry in verdict.entries
        ],
        "attestations": verdict.attestations,
        "error": verdict.error,
    }


# Read-back after a merge ------------------------------------------------------------
# (the merge tool writes the index; checking what was published is inspection's job)


@dataclass(frozen=True)
class Published:
    inspection: Inspection
    problems: tuple[str, ...]  # published differs from built, beyond the verdict

    @property
    def ok(self) -> bool:
        return self.inspection.verdict.ok and not self.problems


def compare_with_builds(inspection: Inspection, builds: Mapping[Platform, str]) -> tuple[str, ...]:
    """Children of the published index that are not the digests built for them."""
    problems = []
    published = {e.platform: e.digest for e in inspection.verdict.entries if e.platform is not None}
    for platform, digest in builds.items():
        got = published.get(platform)
        if got is not None and got != digest:
            problems.append(f"{platform} is {got} in the registry but {digest} was built")
    return tuple(problems)


async def verify_published(
    client: RegistryClient,
    image: str,
    tag: str,
    builds: Mapping[Platform, str],
    required: Sequence[Platform],
) -> Published:
    inspection = await inspect_reference(client, parse_reference(f"{image}:{tag}"), required)
    return Published(inspection, compare_with_builds(inspection, builds))
