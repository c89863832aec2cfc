"""A component's card: which of its tags matter, what every registry holds under them, and
what is wrong, said in words (`/aibrix inspect COMPONENT`, `aibrix-bot inspect COMPONENT`).

Pure: `jobs.usecases.component_card` reads the bot's records, the source's tag list and
every (tag, registry) cell, and hands the values here. This module chooses the tags
(`choose_tags`), names the columns (`card_columns`), judges each cell (`cell_from`), says
what is wrong (`card_problems`, one sentence each, the first one the card's headline) and
lays the card out for Slack, the terminal (`card_table`) and `--json` (`card_json`).

Which tags: the latest promoted release and the latest release in progress (from the
bot's records), the promotion tags (`latest`, `v{major}.{minor}`, rendered for the
promoted version), and the newest release tags of the source's tag list that are not
already on the card (at most `[inspect] registry_tags`): a component released before the
bot was installed, or tags pushed past it, still shows where it stands. Tags that are not
release versions, and the builds' staging tags, are never taken from the list.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

from jobs.domain import messages
from jobs.domain.config import Config
from jobs.domain.config_grammar import staging_pattern
from jobs.domain.release import Release, State
from jobs.domain.verdict import EntryStatus, Outcome, Verdict
from jobs.domain.versions import Version, VersionError, parse_version


class Role(StrEnum):
    PROMOTED = "promoted"  # the latest promoted release on record
    IN_PROGRESS = "in-progress"  # the latest release on record not promoted, failed or cancelled
    PROMOTION_TAG = "promotion-tag"  # a tag promotion writes (`latest`)
    REGISTRY = "registry"  # a release tag found in the source's tag list


# A release in these states is over without being out: not "in progress".
_OVER = frozenset({State.PROMOTED, State.FAILED, State.CANCELLED})


@dataclass(frozen=True)
class Record:
    """What the bot's record says of one version of the component."""

    version: str
    run_id: str
    state: str
    digest: str | None  # the verified index digest, once merged


@dataclass(frozen=True)
class CardTag:
    tag: str
    role: Role
    record: Record | None = None


class ColumnKind(StrEnum):
    SOURCE = "source"  # the release repository the bot writes
    PUBLISH = "publish"  # a mirror promotion publishes to
    MIRROR = "mirror"  # a configured mirror promotion does not write


@dataclass(frozen=True)
class Column:
    name: str  # the source's registry host, or the mirror's configured name
    kind: ColumnKind
    location: str  # HOST[:PORT][/NAMESPACE]


class CellState(StrEnum):
    OK = "ok"
    MISSING = "missing"  # a required platform is not there
    MISMATCH = "mismatch"  # an entry is not the platform it claims, or cannot be resolved
    ABSENT = "absent"  # the registry answered: no such tag
    UNREADABLE = "unreadable"  # the registry did not answer, or refused


@dataclass(frozen=True)
class Cell:
    state: CellState
    digest: str | None = None
    missing: tuple[str, ...] = ()
    mismatched: tuple[str, ...] = ()
    error: str | None = None

    @property
    def holds(self) -> bool:
        """The registry holds the tag (whatever its verdict)."""
        return self.digest is not None


def cell_from(digest: str | None, verdict: Verdict) -> Cell:
    """A read tag's cell from its inspection's digest and verdict."""
    if digest is None or verdict.outcome is Outcome.ERROR:
        return Cell(CellState.UNREADABLE, digest, error=verdict.error or "unreadable")
    mismatched = tuple(e.label for e in verdict.entries if e.status is not EntryStatus.OK)
    missing = tuple(str(p) for p in verdict.missing)
    if mismatched:
        state = CellState.MISMATCH
    elif missing:
        state = CellState.MISSING
    else:
        state = CellState.OK
    return Cell(state, digest, missing, mismatched)


@dataclass(frozen=True)
class ComponentCard:
    component: str
    image: str  # the source image, `{repository}/{component}`
    columns: tuple[Column, ...]
    tags: tuple[CardTag, ...]
    cells: Mapping[tuple[str, str], Cell] = field(
        default_factory=lambda: MappingProxyType({}), hash=False
    )  # (tag, column name) -> what that registry holds under the tag
    tag_list_error: str | None = None  # the source's tag list could not be read

    def cell(self, tag: str, column: str) -> Cell:
        return self.cells.get((tag, column), Cell(CellState.UNREADABLE, error="not read"))

    def expected(self, tag: CardTag) -> tuple[str | None, bool]:
        """The digest every registry should hold under the tag, and whether it is the
        release's (the bot's record) rather than the source's."""
        if tag.record is not None and tag.record.digest:
            return tag.record.digest, True
        return self.cell(tag.tag, self.columns[0].name).digest, False

    @property
    def problems(self) -> tuple[str, ...]:
        return card_problems(self)

    @property
    def unreadable_columns(self) -> tuple[str, ...]:
        """Registries none of whose cells could be read."""
        return tuple(
            c.name
            for c in self.columns
            if self.tags
            and all(self.cell(t.tag, c.name).state is CellState.UNREADABLE for t in self.tags)
        )


# ---- which tags ----------------------------------------------------------------------


def card_columns(config: Config) -> tuple[Column, ...]:
    """The source first, then the other publish registries (named by their location: a
    release's copies), then the mirrors promotion publishes to, then the other mirrors
    (each in configured order)."""
    source = Column(config.repository.split("/", 1)[0], ColumnKind.SOURCE, config.repository)
    publish = [
        Column(location, ColumnKind.PUBLISH, location) for location in config.secondary_publish
    ] + [
        Column(name, ColumnKind.PUBLISH, config.mirrors[name]) for name in config.promotion.mirrors
    ]
    others = [
        Column(name, ColumnKind.MIRROR, location)
        for name, location in config.mirrors.items()
        if name not in config.promotion.mirrors
    ]
    return (source, *publish, *others)


def records_of(releases: Iterable[Release], component: str) -> tuple[Record, ...]:
    """The records of releases that include `component`."""
    found = []
    for release in releases:
        if component not in release.components:
            continue
        index = release.indexes.get(component)
        digest = index.digest if index is not None and index.digest else None
        found.append(Record(str(release.version), release.run_id, release.state.value, digest))
    return tuple(found)


def _as_version(text: str) -> Version | None:
    try:
        return parse_version(text)
    except VersionError:
        return None


def release_tags(tags: Iterable[str], config: Config) -> list[str]:
    """The release versions among `tags`, newest first (a prerelease after its release,
    by version precedence); other tags and the builds' staging tags left out."""
    staging = [staging_pattern(config.staging_tag, p) for p in config.platforms]
    versions: dict[str, Version] = {}
    for tag in tags:
        version = _as_version(tag)
        if version is None or any(p.fullmatch(tag) for p in staging):
            continue
        versions[tag] = version
    return sorted(versions, key=lambda t: versions[t], reverse=True)


def _newest(records: Iterable[Record]) -> Record | None:
    ranked = [(v, r) for r in records if (v := _as_version(r.version)) is not None]
    return max(ranked, key=lambda pair: pair[0])[1] if ranked else None


def _promotion_tags(config: Config, version: Version | None) -> list[str]:
    if version is None:  # nothing to render them for: only the fixed ones (`latest`)
        return [t for t in config.promotion.tags if "{" not in t]
    try:
        return list(config.promotion_tags_for(version))
    except VersionError:
        return []


def choose_tags(
    config: Config,
    records: Sequence[Record],
    registry_tags: Sequence[str],
    limit: int,
) -> tuple[CardTag, ...]:
    """The card's tags: the latest promoted and the latest in-progress release on record,
    the newest `limit` release tags of the tag list not already shown (with their record
    when there is one), newest first; then the promotion tags."""
    promoted = _newest(r for r in records if r.state == State.PROMOTED.value)
    in_progress = _newest(r for r in records if r.state not in {s.value for s in _OVER})
    chosen: dict[str, CardTag] = {}
    if promoted is not None:
        chosen[promoted.version] = CardTag(promoted.version, Role.PROMOTED, promoted)
    if in_progress is not None:
        chosen[in_progress.version] = CardTag(in_progress.version, Role.IN_PROGRESS, in_progress)
    by_version = {r.version: r for r in records}
    listed = [t for t in release_tags(registry_tags, config) if t not in chosen][: max(0, limit)]
    for tag in listed:
        chosen[tag] = CardTag(tag, Role.REGISTRY, by_version.get(tag))
    ordered = sorted(chosen.values(), key=lambda t: parse_version(t.tag), reverse=True)
    # The promotion tags follow the promoted release; without a record, the newest final
    # release in the tag list (what promotion would have written them for).
    finals = [
        v for t in release_tags(registry_tags, config) if not (v := parse_version(t)).prerelease
    ]
    target = (
        parse_version(promoted.version) if promoted is not None else (finals[0] if finals else None)
    )
    promotion = [
        CardTag(t, Role.PROMOTION_TAG) for t in _promotion_tags(config, target) if t not in chosen
    ]
    return (*ordered, *promotion)


# ---- what is wrong --------------------------------------------------------------------


def _current(card: ComponentCard) -> str | None:
    """The release every registry should hold: the latest promoted on record, else (no
    record) the newest final release in the tag list."""
    for tag in card.tags:
        if tag.role is Role.PROMOTED:
            return tag.tag
    finals = [
        t.tag
        for t in card.tags
        if t.role is Role.REGISTRY and not parse_version(t.tag).is_prerelease
    ]
    return finals[0] if finals else None


def _expected_on(tag: CardTag, column: Column, current: str | None) -> bool:
    """Whether `column` lacking `tag` is wrong: the current release belongs everywhere,
    promotion tags at the source and where promotion publishes, a merged release at the
    source; older tags found in the list, and a release still on its way, nowhere else."""
    if column.kind is ColumnKind.SOURCE:
        if tag.role is Role.IN_PROGRESS:
            return tag.record is not None and tag.record.digest is not None
        return tag.role is not Role.PROMOTION_TAG or current is not None
    if tag.role is Role.PROMOTION_TAG:
        return column.kind is ColumnKind.PUBLISH and current is not None
    return tag.tag == current


def card_problems(card: ComponentCard) -> tuple[str, ...]:
    """One sentence per thing wrong, most telling first: platforms missing or mismatched,
    digests that differ, tags a registry lacks, then what could not be read."""
    dead = set(card.unreadable_columns)
    unreadable: list[str] = []
    verdicts: list[str] = []
    drift: list[str] = []
    lacking: list[str] = []
    if card.tag_list_error is not None:
        unreadable.append(messages.card_tag_list_unreadable(card.image, card.tag_list_error))
    for column in card.columns:
        if column.name in dead:
            error = (
                next((card.cell(t.tag, column.name).error for t in card.tags), None) or "unreadable"
            )
            unreadable.append(messages.card_registry_unreadable(column.name, error))
    source = card.columns[0]
    current = _current(card)
    for tag in card.tags:
        expected, recorded = card.expected(tag)
        source_cell = card.cell(tag.tag, source.name)
        for column in card.columns:
            if column.name in dead:
                continue
            cell = card.cell(tag.tag, column.name)
            if cell.state is CellState.UNREADABLE:
                unreadable.append(
                    messages.card_cell_unreadable(column.name, tag.tag, cell.error or "")
                )
                continue
            if cell.state is CellState.ABSENT:
                at_source = column.kind is ColumnKind.SOURCE
                if _expected_on(tag, column, current) and (at_source or source_cell.holds):
                    lacking.append(messages.card_lacks(column.name, tag.tag))
                continue
            if cell.missing:
                verdicts.append(messages.card_tag_missing(tag.tag, cell.missing, column.name))
            if cell.mismatched:
                verdicts.append(messages.card_tag_mismatched(tag.tag, cell.mismatched, column.name))
            if expected is not None and cell.digest is not None and cell.digest != expected:
                if column.kind is ColumnKind.SOURCE and not recorded:
                    continue  # the source is what the others are compared with
                drift.append(
                    messages.card_drift(column.name, tag.tag, cell.digest, expected, recorded)
                )
    return (*verdicts, *drift, *lacking, *unreadable)


def card_headline(card: ComponentCard) -> str:
    """The one line at the top: what is wrong, or that nothing is."""
    problems = card.problems
    if problems:
        return messages.card_headline(problems)
    if not card.tags:
        return messages.card_no_tags(card.component)
    return messages.card_all_good(card.component, len(card.tags), len(card.columns))


# ---- layouts ---------------------------------------------------------------------------

_CELL_WORDS = {
    CellState.OK: "ok",
    CellState.MISSING: "MISSING",
    CellState.MISMATCH: "MISMATCH",
}


def _short(digest: str | None) -> str:
    return (digest or "-").partition(":")[2][:8] or "-"


def cell_text(card: ComponentCard, tag: CardTag, column: Column) -> str:
    """A table cell: `ok 1a2b3c4d`, `MISSING 1a2b3c4d`, `DRIFT 9f8e7d6c`, `no tag`,
    `unreadable`."""
    cell = card.cell(tag.tag, column.name)
    if cell.state is CellState.ABSENT:
        return "no tag"
    if cell.state is CellState.UNREADABLE:
        return "unreadable"
    expected, recorded = card.expected(tag)
    drifted = (
        expected is not None
        and cell.digest != expected
        and (column.kind is not ColumnKind.SOURCE or recorded)
    )
    word = "DRIFT" if drifted and cell.state is CellState.OK else _CELL_WORDS[cell.state]
    return f"{word} {_short(cell.digest)}"


def tag_label(tag: CardTag) -> str:
    role = messages.card_role(
        tag.role.value, tag.record.state if tag.record else None, tag.record is not None
    )
    return f"{tag.tag} ({role})"


def card_table(card: ComponentCard) -> list[str]:
    """The matrix, one line a tag, one column a registry, padded for a monospace font."""
    rows = [["TAG", *(c.name for c in card.columns)]]
    for tag in card.tags:
        rows.append([tag_label(tag), *(cell_text(card, tag, c) for c in card.columns)])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]


def card_json(card: ComponentCard) -> dict[str, object]:
    """`aibrix-bot inspect COMPONENT --json` (an interface users' CI may rely on)."""
    source = card.columns[0].name
    tags = []
    for tag in card.tags:
        expected, recorded = card.expected(tag)
        registries = {}
        for column in card.columns:
            cell = card.cell(tag.tag, column.name)
            registries[column.name] = {
                "status": cell.state.value,
                "digest": cell.digest,
                "missing": list(cell.missing),
                "mismatched": list(cell.mismatched),
                "same_as_expected": None
                if cell.digest is None or expected is None
                else cell.digest == expected,
                "error": cell.error,
            }
        tags.append(
            {
                "tag": tag.tag,
                "role": tag.role.value,
                "record": None
                if tag.record is None
                else {
                    "version": tag.record.version,
                    "run_id": tag.record.run_id,
                    "state": tag.record.state,
                    "digest": tag.record.digest,
                },
                "expected_digest": expected,
                "expected_from": "release" if recorded else source,
                "registries": registries,
            }
        )
    return {
        "component": card.component,
        "image": card.image,
        "headline": card_headline(card),
        "problems": list(card.problems),
        "registries": [
            {
                "name": c.name,
                "kind": c.kind.value,
                "location": c.location,
                "readable": c.name not in card.unreadable_columns,
            }
            for c in card.columns
        ],
        "tag_list_error": card.tag_list_error,
        "tags": tags,
    }
