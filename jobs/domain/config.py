"""The release configuration: one TOML file, validated completely when it is loaded.

The file names the components (name, Dockerfile, context, build args, target stage), the
source repository and the ref to check out for a version, the repository namespace the
images go to (`{repository}/{component}`), the required platforms, the mirrors, the
approval policy, the promotion tags, queue settings and the per-platform staging tag.
`sample/aibrix-sample.toml` documents every key.

Where the file comes from: the explicit path given to `load_config`, else the
`AIBRIX_CONFIG` environment variable, else no file: the built-in defaults, which describe
AIBrix itself (vllm-project/aibrix, five components, docker.io/aibrix, linux/amd64 and
linux/arm64, the Beijing and Shanghai mirrors).

A bad file is refused at load with a `ConfigError` that names the file, the key as a
dotted path (`components[2].dockerfile`, `approval.approvals_required`) and the reason.
Relative paths in the file (a `source.path`, a local `source.git`) are relative to the
directory of the file.

This module is the model: the values a loaded configuration is made of. Reading and
checking a file is `jobs.domain.config_reader` (`load_config`, `parse_config`); the
grammar both use (hosts, tags, git refs, templates) is `jobs.domain.config_grammar`.
Everything is pure except `load_config`, which reads the file, and the existence checks
of local source directories and of `Config.build_paths`.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Literal

from jobs.domain import messages
from jobs.domain.config_grammar import (
    VersionRange,
    file_label,
    is_git_ref,
    is_location,
    is_tag,
    platform_values,
    render,
    staging_pattern,
    version_values,
)
from jobs.domain.errors import InvalidInput
from jobs.domain.nightly import (
    NIGHTLY_TAG,
    is_nightly,
    layout_version,
    nightly_revision,
    release_tag,
)
from jobs.domain.permissions import Permissions
from jobs.domain.platforms import DEFAULT_PLATFORMS, Platform
from jobs.domain.versions import (
    Version,
    VersionError,
    validate_component_name,
)

CONFIG_ENV = "AIBRIX_CONFIG"
DEFAULTS_LABEL = "built-in defaults"


SourceKind = Literal["git", "path"]

# ---- the configuration ------------------------------------------------------------


class ConfigError(InvalidInput, ValueError):
    """A configuration that cannot be used. `file` is the file (or "built-in defaults"),
    `key` the dotted path of the offending key ("" for the file as a whole), `reason`
    what is wrong and what is accepted."""

    def __init__(self, file: str, key: str, reason: str) -> None:
        super().__init__(messages.config_error(file, key, reason))
        self.file = file
        self.key = key
        self.reason = reason


class MirrorError(InvalidInput, ValueError):
    """Neither a configured mirror name nor a valid registry location."""


@dataclass(frozen=True)
class Layout:
    """Where a component's build is for a range of versions: each field given replaces
    the component's own (None: keep it). AIBrix's runtime moved from
    `Dockerfile.runtime` to `Dockerfile.python` in v0.5.0."""

    versions: VersionRange
    dockerfile: str | None = None
    context: str | None = None
    build_args: Mapping[str, str] | None = field(default=None, hash=False)
    target: str | None = None


@dataclass(frozen=True)
class Component:
    """One image of the project. `context` is relative to the source root, `dockerfile`
    relative to the context; both normalised, never absolute, never leaving their base.

    `versions` (None: every version) are the versions the component is released in;
    `layouts` say where its build is for ranges of versions, the first whose range holds
    wins, and none: the component's own fields. `at(version)` is the component as a
    release of that version builds it."""

    name: str
    dockerfile: str = "Dockerfile"
    context: str = "."
    build_args: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), hash=False)
    target: str | None = None
    # Absolute paths in the image (files, or directories checked file by file) whose ELF
    # binaries must be of each platform's architecture, besides the entrypoint.
    binaries: tuple[str, ...] = ()
    versions: VersionRange | None = None
    layouts: tuple[Layout, ...] = ()

    def applies_to(self, version: Version) -> bool:
        version = layout_version(version)
        return self.versions is None or self.versions.contains(version)

    def at(self, version: Version) -> Component:
        """This component's build for `version`: the matching layout applied, no ranges."""
        version = layout_version(version)
        chosen = next((lay for lay in self.layouts if lay.versions.contains(version)), None)
        resolved = replace(self, versions=None, layouts=())
        if chosen is None:
            return resolved
        return replace(
            resolved,
            dockerfile=chosen.dockerfile if chosen.dockerfile is not None else self.dockerfile,
            context=chosen.context if chosen.context is not None else self.context,
            build_args=chosen.build_args if chosen.build_args is not None else self.build_args,
            target=chosen.target if chosen.target is not None else self.target,
        )

    @property
    def dockerfile_path(self) -> str:
        """The Dockerfile relative to the source root, e.g. `development/app/Dockerfile`."""
        return posixpath.normpath(posixpath.join(self.context, self.dockerfile))


ComponentBuild = Component
"""A component resolved for one version (`Component.at`): no ranges, no layouts."""


PolicyChoice = Literal["refuse", "show"]
POLICY_CHOICES: tuple[PolicyChoice, ...] = ("refuse", "show")


@dataclass(frozen=True)
class Preflight:
    """What is checked in the source before a release is queued, besides the components'
    paths: the release manifests (`kustomizations`: every `images[]` entry of one of the
    release's images must carry `newTag` = the version; `charts`: `appVersion` = the
    version without its `v`; a file that does not exist at the revision is skipped), and
    the third-party images a release deploys (those other `images[]` entries, plus
    `dependencies`), inspected for the required platforms on the plan. `final` and
    `prerelease` say whether manifest findings refuse the release or only show."""

    kustomizations: tuple[str, ...] = ()
    charts: tuple[str, ...] = ()
    dependencies: tuple[str, ...] = ()
    final: PolicyChoice = "refuse"
    prerelease: PolicyChoice = "show"

    def refuses(self, version: Version) -> bool:
        if is_nightly(version):
            return False  # a branch head's manifests name the last release, by design
        return (self.prerelease if version.is_prerelease else self.final) == "refuse"


@dataclass(frozen=True)
class BuildPaths:
    """Where a component's build context and Dockerfile are in a checked-out source."""

    context: Path
    dockerfile: Path


@dataclass(frozen=True)
class Source:
    """Where the code of a release comes from.

    kind "git": `location` is a repository URL (https, http, ssh, git, file, or scp-like
    user@host:path) or an absolute local path; check it out at `ref_for(version)`.
    kind "path": `location` is an absolute directory used as it is: no checkout, `ref` is
    not used (the sample project is a directory inside this repository).
    """

    kind: SourceKind
    location: str
    ref: str = "{version}"

    @property
    def directory(self) -> Path | None:
        """The directory to build from, for a `path` source; None for git."""
        return Path(self.location) if self.kind == "path" else None

    def ref_for(self, version: Version) -> str:
        """The git ref to check out for a release, e.g. `v0.3.0-rc.2` or `release-v0.3`;
        for a nightly, its commit."""
        revision = nightly_revision(version)
        if revision is not None:
            return revision
        ref = render(self.ref, version_values(version))
        if not is_git_ref(ref):  # a very long version, or one ending in ".lock"
            raise VersionError(messages.version_unusable(str(version), "git ref", ref))
        return ref


@dataclass(frozen=True)
class ApprovalPolicy:
    """Who may approve a promotion. With no approvers and no groups, nobody can."""

    approvers: tuple[str, ...] = ()
    approver_groups: tuple[str, ...] = ()
    approvals_required: int = 1
    allow_self_approval: bool = False
    approval_ttl_seconds: int = 3600

    def is_approver(self, user_id: str, user_group_ids: Iterable[str] = ()) -> bool:
        """Whether a user is listed, or is in a listed user group (self-approval and the
        count of approvals are the caller's to check)."""
        if user_id in self.approvers:
            return True
        return any(group in self.approver_groups for group in user_group_ids)


@dataclass(frozen=True)
class Promotion:
    """Tags written on promotion, from templates (`latest`, `v{major}.{minor}`).
    Prerelease versions get them only when `prereleases` is true. `mirrors` (configured
    mirror names) receive the release, through the sync engine, once it is approved."""

    tags: tuple[str, ...] = ()
    prereleases: bool = False
    mirrors: tuple[str, ...] = ()


MAX_RETENTION_DAYS = 3650
MAX_CARD_REGISTRY_TAGS = 20


@dataclass(frozen=True)
class InspectSettings:
    """`[inspect]`: a component's card shows at most `registry_tags` release tags found in
    the repository's tag list besides those on record (bounded: every tag is read on every
    registry)."""

    registry_tags: int = 3


@dataclass(frozen=True)
class NightlySettings:
    """`[nightly]`: whether a nightly waits for an approval before `nightly` moves (by
    default it moves as soon as the new index passes the gate)."""

    approval: bool = False


@dataclass(frozen=True)
class QueueSettings:
    max_attempts: int = 3
    backoff_base_seconds: float = 2.0
    backoff_cap_seconds: float = 60.0
    lease_seconds: int = 60
    key_prefix: str = "aibrix"
    # Days a settled run's detail is kept in Redis; the version's immutable record stays.
    retention_days: float = 90.0
    # How long a Slack delivery, or a release's live message, being handled is held
    # before a redelivery or another bot replica may take it over (a crash mid-handling).
    claim_seconds: int = 30
    # How often a worker renews the lease of a job it runs (0: a third of the lease). A
    # renewal that fails is retried with backoff until the lease would run out.
    renew_seconds: float = 0.0
    # A consumer idle this long with nothing pending (a dead worker's) leaves its group.
    consumer_idle_seconds: int = 3600

    @property
    def retention_seconds(self) -> int:
        return max(1, int(self.retention_days * 86400))


MAX_REGISTRY_BUDGET_SECONDS = 3600.0


@dataclass(frozen=True)
class RegistryConfig:
    # How long the reads of one reference (index, children, configs; every attempt) may
    # take before the registry client gives up on a server that hangs or trickles.
    budget_seconds: float = 35.0
    # How long a merge (imagetools create, the read-back) keeps retrying transient registry
    # faults (5xx, 429, dropped connections) before the release is left blocked with the
    # reason: minutes, because a registry restart or a rate-limit window takes that long.
    merge_retry_seconds: float = 300.0


@dataclass(frozen=True)
class Config:
    components: tuple[Component, ...]
    source: Source
    repository: str
    platforms: tuple[Platform, ...] = DEFAULT_PLATFORMS
    mirrors: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), hash=False)
    approval: ApprovalPolicy = ApprovalPolicy()
    permissions: Permissions = field(default_factory=Permissions)
    promotion: Promotion = Promotion()
    queue: QueueSettings = QueueSettings()
    registry: RegistryConfig = RegistryConfig()
    staging_tag: str = "{version}-{arch}"
    # Whether a merged index's binaries are checked against its platforms (ELF headers).
    check_binaries: bool = True
    # Images named in FROM -> the reference to build from instead (a mirror).
    base_images: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), hash=False)
    preflight: Preflight = Preflight()
    inspect: InspectSettings = InspectSettings()
    # Every registry location a release publishes to, the first being `repository` (the
    # primary, where the one merge writes); empty: `repository` alone.
    publish: tuple[str, ...] = ()
    nightly: NightlySettings = NightlySettings()
    path: Path | None = None
    """The file this was loaded from; None for the built-in defaults."""

    @property
    def publish_locations(self) -> tuple[str, ...]:
        """Where a release is published, primary first: one build, one merge into the
        primary, the verified index copied to the others with the sync engine."""
        return self.publish or (self.repository,)

    @property
    def secondary_publish(self) -> tuple[str, ...]:
        """The publish registries after the primary: they receive copies of the index."""
        return self.publish_locations[1:]

    @property
    def label(self) -> str:
        return file_label(self.path) if self.path is not None else DEFAULTS_LABEL

    @property
    def component_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.components)

    def at(self, version: Version) -> Config:
        """This configuration as a release of `version` sees it: only the components
        released in that version, each with its layout for that version applied."""
        return replace(self, components=components_for(self, version))

    def component(self, name: str) -> Component:
        """The configured component of that name; `ComponentError` lists the names."""
        validate_component_name(name, self.component_names)
        return next(c for c in self.components if c.name == name)

    def image(self, component: str | Component) -> str:
        """`{repository}/{component}`, e.g. `docker.io/aibrix/runtime`."""
        name = component.name if isinstance(component, Component) else component
        return f"{self.repository}/{self.component(name).name}"

    def release_reference(self, component: str | Component, version: Version) -> str:
        """The release tag, which only the merge step writes: `docker.io/aibrix/runtime:v0.3.0`
        (a nightly's: the full commit sha)."""
        return f"{self.image(component)}:{release_tag(version)}"

    def staging_tag_for(self, version: Version, platform: Platform) -> str:
        """The per-platform tag a build pushes, e.g. `v0.3.0-rc.2-arm64`."""
        tag = render(self.staging_tag, platform_values(version, platform))
        if not is_tag(tag):
            raise VersionError(messages.version_unusable(str(version), "tag", tag))
        return tag

    def staging_reference(
        self, component: str | Component, version: Version, platform: Platform
    ) -> str:
        return f"{self.image(component)}:{self.staging_tag_for(version, platform)}"

    def promotion_tags_for(self, version: Version) -> tuple[str, ...]:
        """The tags promotion writes for this version (none for a prerelease unless
        `promotion.prereleases`); a nightly's: `nightly`."""
        if is_nightly(version):
            return (NIGHTLY_TAG,)
        if version.is_prerelease and not self.promotion.prereleases:
            return ()
        tags = tuple(render(t, version_values(version)) for t in self.promotion.tags)
        for tag in tags:
            if not is_tag(tag):
                raise VersionError(messages.version_unusable(str(version), "tag", tag))
        return tags

    def check_version(self, version: Version) -> None:
        """Raise `VersionError` if this version cannot be released with this configuration
        (a staging tag, promotion tag or git ref it makes is too long). Call it when a
        release is asked for, before anything is queued.

        A version that has the form of a staging tag of another version (with the default
        `{version}-{arch}`: `v0.3.0-arm64`, the arm64 staging tag of v0.3.0) is refused, so
        that a release tag and a staging tag can never be the same tag."""
        for platform in self.platforms:
            if staging_pattern(self.staging_tag, platform).fullmatch(str(version)):
                raise VersionError(messages.version_is_staging_tag(str(version), str(platform)))
        for platform in self.platforms:
            self.staging_tag_for(version, platform)
        self.promotion_tags_for(version)
        if self.source.kind == "git":
            self.source.ref_for(version)

    def mirror(self, name_or_location: str) -> str:
        """A configured mirror's location by name, or a literal `HOST[:PORT][/NAMESPACE]`
        (validated); `MirrorError` otherwise."""
        if name_or_location in self.mirrors:
            return self.mirrors[name_or_location]
        if is_location(name_or_location):
            return name_or_location
        raise MirrorError(messages.mirror_unknown(name_or_location, sorted(self.mirrors)))

    def build_paths(self, component: str | Component, source_root: Path) -> BuildPaths:
        """The context directory and Dockerfile of a component inside a checked-out source.
        Raises `ConfigError` when either is missing or a symbolic link leads outside."""
        name = component.name if isinstance(component, Component) else component
        chosen = self.component(name)
        index = self.components.index(chosen)
        key = f"components[{index}]"
        root = source_root.resolve()
        context = (root / chosen.context).resolve()
        if not context.is_relative_to(root):
            raise ConfigError(
                self.label,
                f"{key}.context",
                messages.config_path_outside(chosen.context, str(root)),
            )
        if not context.is_dir():
            raise ConfigError(
                self.label,
                f"{key}.context",
                messages.config_path_missing(chosen.context, str(root)),
            )
        dockerfile = (context / chosen.dockerfile).resolve()
        if not dockerfile.is_relative_to(context):
            raise ConfigError(
                self.label,
                f"{key}.dockerfile",
                messages.config_path_outside(chosen.dockerfile, str(context)),
            )
        if not dockerfile.is_file():
            raise ConfigError(
                self.label,
                f"{key}.dockerfile",
                messages.config_path_missing(chosen.dockerfile, str(context)),
            )
        return BuildPaths(context=context, dockerfile=dockerfile)


def components_for(config: Config, version: Version) -> tuple[ComponentBuild, ...]:
    """The components a release of `version` builds, in configured order, each resolved
    to its layout for that version (AIBrix v0.3.0: runtime from Dockerfile.runtime, no
    vllm-mock; v0.7.0: runtime from Dockerfile.python, vllm-mock from development/app)."""
    return tuple(c.at(version) for c in config.components if c.applies_to(version))
