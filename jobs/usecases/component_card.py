"""Read a component's card: the bot's records, the source's tag list, and every chosen tag
on every configured registry, concurrently and bounded.

The records come from the caller (`Pipeline.status(None)` in the bot, the release store
in the command line), so this reads no Redis. Every (tag, registry) cell is read at the
same time, at most `concurrency` at once, each within `cell_timeout` seconds: one slow
or dead registry makes its own column "unreadable" and holds up nothing else. What the
values mean is decided in `jobs.domain.component_card`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace

from jobs.domain import messages
from jobs.domain.component_card import (
    CardTag,
    Cell,
    CellState,
    Column,
    ComponentCard,
    Role,
    card_columns,
    cell_from,
    choose_tags,
    records_of,
)
from jobs.domain.config import Config
from jobs.domain.platforms import Platform
from jobs.domain.references import Reference, parse_reference
from jobs.domain.release import Release
from jobs.registry.client import NotFoundError, RegistryClient, RegistryError, RegistrySettings
from jobs.registry.inspection import inspect_reference

CONCURRENCY = 16  # cells read at once (each is a few requests)
CELL_TIMEOUT = 10.0  # seconds for one tag on one registry, retries included
CARD_ATTEMPTS = 3  # a card is a look, not a gate: a dead registry is said fast


def card_settings(settings: RegistrySettings) -> RegistrySettings:
    """The registry settings a card reads with: fewer retries, so a registry that is down
    shows as such in about a second instead of after the full backoff."""
    return replace(settings, max_attempts=min(settings.max_attempts, CARD_ATTEMPTS))


def column_reference(column: Column, component: str, tag: str) -> Reference:
    return parse_reference(f"{column.location.rstrip('/')}/{component}:{tag}")


async def _read_cell(
    client: RegistryClient,
    ref: Reference,
    required: Sequence[Platform],
    gate: asyncio.Semaphore,
    timeout: float,
) -> Cell:
    async with gate:
        try:
            async with asyncio.timeout(timeout):
                with client.shared_reads():  # the inspection reuses this first read
                    try:
                        await client.get_manifest(ref)
                    except NotFoundError:
                        return Cell(CellState.ABSENT)
                    except RegistryError as error:
                        return Cell(CellState.UNREADABLE, error=error.message)
                    inspection = await inspect_reference(client, ref, required)
        except TimeoutError:
            return Cell(CellState.UNREADABLE, error=messages.card_read_timeout(timeout))
    return cell_from(inspection.digest, inspection.verdict)


async def _tag_list(
    client: RegistryClient, ref: Reference, timeout: float
) -> tuple[list[str], str | None]:
    try:
        async with asyncio.timeout(timeout):
            return await client.tags(ref), None
    except NotFoundError:
        return [], None  # no repository yet: no tags, which is not an error
    except RegistryError as error:
        return [], error.message
    except TimeoutError:
        return [], messages.card_read_timeout(timeout)


async def read_card(
    client: RegistryClient,
    config: Config,
    component: str,
    releases: Sequence[Release],
    *,
    only_tag: str | None = None,
    concurrency: int = CONCURRENCY,
    cell_timeout: float = CELL_TIMEOUT,
) -> ComponentCard:
    """The card of `component` (a configured name; `ComponentError` otherwise). With
    `only_tag`, that one tag on every registry (`inspect COMPONENT TAG`), no tag list."""
    name = config.component(component).name
    image = config.image(name)
    columns = card_columns(config)
    records = records_of(releases, name)
    tag_list_error = None
    if only_tag is not None:
        record = next((r for r in records if r.version == only_tag), None)
        tags: tuple[CardTag, ...] = (CardTag(only_tag, Role.REGISTRY, record),)
    else:
        listed, tag_list_error = await _tag_list(
            client, column_reference(columns[0], name, "latest"), cell_timeout
        )
        tags = choose_tags(config, records, listed, config.inspect.registry_tags)
    gate = asyncio.Semaphore(max(1, concurrency))
    keys = [(t.tag, c) for t in tags for c in columns]
    cells = await asyncio.gather(
        *(
            _read_cell(
                client,
                column_reference(column, name, tag),
                config.platforms,
                gate,
                cell_timeout,
            )
            for tag, column in keys
        )
    )
    return ComponentCard(
        name,
        image,
        columns,
        tags,
        {(tag, column.name): cell for (tag, column), cell in zip(keys, cells, strict=True)},
        tag_list_error,
    )
