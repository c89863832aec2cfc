"""The binary architecture check, run on a merged release index: for each platform entry,
read the image's layers (streamed) and judge the ELF headers of its entrypoint chain and of
the files under the component's configured paths against the entry's platform.

A label is only a label: BuildKit stamps the platform it was asked for on the index entry
and the image config, whatever the compiler produced (AIBrix's gateway-plugins nightly
shipped x86-64 binaries as arm64). This check reads what the kernel will read.

Platforms are checked one after another, so one image's tree is in memory at a time. A
file that a first read did not keep the first bytes of (a `#!` interpreter outside the PATH
directories) is fetched by a second read of the layers that keeps exactly those files.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from jobs.domain import messages
from jobs.domain.elf import BinaryCheck, BinaryFinding, BinaryStatus
from jobs.domain.image_files import HeadPlan, first_plan, judge_tree, run_config_from
from jobs.domain.manifests import ManifestError
from jobs.domain.platforms import Platform
from jobs.domain.references import Reference, parse_reference
from jobs.registry.client import MAX_CONFIG_BYTES, RegistryClient, RegistryError
from jobs.registry.layers import LayerError, read_tree

log = logging.getLogger("aibrix.binaries")

MAX_PASSES = 3


def unreadable(reason: str) -> BinaryFinding:
    """A finding for an image whose files could not be read: it blocks, with the reason."""
    return BinaryFinding("", "", BinaryStatus.UNREADABLE, detail=reason)


async def check_image(
    client: RegistryClient,
    ref: Reference,
    platform: Platform,
    paths: Sequence[str],
) -> BinaryCheck:
    """Check the image manifest `ref` (pinned by digest) as an image for `platform`."""
    digest = ref.digest or ""
    try:
        manifest = await client.get_manifest(ref)
        if manifest.is_index or manifest.config is None:
            raise ManifestError(messages.binary_not_an_image())
        run = run_config_from(await client.get_blob(ref, manifest.config.digest, MAX_CONFIG_BYTES))
        if not run.argv and not paths:
            return BinaryCheck(platform, digest, ())  # nothing runs, nothing configured
        plan: HeadPlan = first_plan(run, paths)
        for _ in range(MAX_PASSES):
            tree = await read_tree(client, ref, manifest.layers, plan)
            walk = judge_tree(tree, run, paths, platform, digest)
            if walk.check is not None:
                return walk.check
            plan = plan.with_exact(walk.need)
        unsettled = unreadable(messages.binary_files_unsettled(MAX_PASSES))
        return BinaryCheck(platform, digest, (unsettled,))
    except (RegistryError, LayerError, ManifestError) as error:
        reason = error.message if isinstance(error, RegistryError) else str(error)
        log.warning("binary check of %s failed: %s", ref, reason)
        return BinaryCheck(platform, digest, (unreadable(reason),))


async def check_index(
    client: RegistryClient, image: str, index_digest: str, paths: Sequence[str]
) -> list[BinaryCheck]:
    """Check every platform entry (attestations aside) of the index `image@index_digest`."""
    index_ref = parse_reference(f"{image}@{index_digest}")
    index = await client.get_manifest(index_ref)
    if not index.is_index:
        return []
    checks = []
    for entry in index.manifests:
        if entry.is_attestation or entry.platform is None:
            continue
        checks.append(
            await check_image(client, index_ref.with_digest(entry.digest), entry.platform, paths)
        )
    return checks
