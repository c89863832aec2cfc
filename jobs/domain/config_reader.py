"""Reading the configuration: `load_config` (the file, `$AIBRIX_CONFIG` or the built-in
defaults), `parse_config` (TOML text) and the reader that walks the parsed data and checks
every key, raising a `ConfigError` that names the file, the key and the reason. The values
it builds are `jobs.domain.config`'s."""

from __future__ import annotations

import math
import os
import posixpath
import tomllib
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import NoReturn, TypeVar

from jobs.domain import messages
from jobs.domain.base_images import context_name
from jobs.domain.config import (
    CONFIG_ENV,
    DEFAULTS_LABEL,
    MAX_CARD_REGISTRY_TAGS,
    MAX_REGISTRY_BUDGET_SECONDS,
    MAX_RETENTION_DAYS,
    POLICY_CHOICES,
    ApprovalPolicy,
    Component,
    Config,
    ConfigError,
    InspectSettings,
    Layout,
    NightlySettings,
    PolicyChoice,
    Preflight,
    Promotion,
    QueueSettings,
    RegistryConfig,
    Source,
)
from jobs.domain.config_grammar import (
    BUILD_ARG_NAME,
    GIT_SCHEMES,
    HOST,
    IMAGE_NAME_MAX_LENGTH,
    KEY_PREFIX,
    PLACEHOLDER,
    SAMPLE_VERSIONS,
    SCP_LIKE,
    SIMPLE_KEY,
    SLACK_CHANNEL,
    SLACK_GROUP,
    SLACK_USER,
    STAGE,
    STAGING_PLACEHOLDERS,
    URL_USER,
    VERSION_PLACEHOLDERS,
    VersionRange,
    file_label,
    is_git_ref,
    is_location,
    is_tag,
    is_version,
    parse_range,
    platform_values,
    render,
    version_values,
)
from jobs.domain.permissions import ROLES, Action, Grant, Permissions, build_permissions
from jobs.domain.platforms import DEFAULT_PLATFORMS, Platform, PlatformError, parse_platform
from jobs.domain.references import InvalidReferenceError, parse_reference
from jobs.domain.versions import (
    COMPONENT_NAME_MAX_LENGTH,
    VersionError,
    is_component_name,
)

# ---- loading ----------------------------------------------------------------------


def load_config(path: Path | None = None, env: Mapping[str, str] = os.environ) -> Config:
    """Load the configuration from `path`, else from `$AIBRIX_CONFIG`, else the defaults."""
    if path is None:
        from_env = env.get(CONFIG_ENV, "")
        if from_env:
            path = Path(from_env)
    if path is None:
        return default_config()
    label = file_label(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(label, "", messages.config_not_utf8()) from None
    except OSError as error:
        raise ConfigError(
            label, "", messages.config_unreadable(error.strerror or str(error))
        ) from None
    return parse_config(text, path)


def parse_config(text: str, path: Path) -> Config:
    """Parse the TOML text of the file at `path` (used for messages and for resolving
    relative paths)."""
    label = file_label(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(label, "", messages.config_not_toml(str(error))) from None
    absolute = path.absolute()
    if "extends" in data:
        data = extend(data, label)
    return config_from_data(data, label, absolute.parent, absolute)


def extend(data: Mapping[str, object], label: str) -> dict[str, object]:
    """A file that says `extends = "aibrix"`: the built-in defaults, with every top-level
    key the file names replaced by the file's, except `components`, which are merged by
    name (a component the file names replaces the built-in one of that name, a new name
    is added after them)."""
    base = data["extends"]
    if not isinstance(base, str) or base not in BASES:
        shown = base if isinstance(base, str) else repr(base)
        raise ConfigError(label, "extends", messages.config_bad_extends(shown, sorted(BASES)))
    inherited_base = dict(BASES[base])
    if "repository" in data or "publish" in data:
        # Where to publish is one decision: a file naming either key makes it alone.
        inherited_base.pop("repository", None)
        inherited_base.pop("publish", None)
    merged: dict[str, object] = {
        **inherited_base,
        **{k: v for k, v in data.items() if k != "extends"},
    }
    if "components" in data and isinstance(data["components"], list):
        own = [c for c in data["components"] if isinstance(c, dict)]
        if len(own) == len(data["components"]):
            named = {c.get("name"): c for c in own}
            inherited = BASES[base]["components"]
            assert isinstance(inherited, list)
            kept = [named.pop(c["name"], c) for c in inherited]
            merged["components"] = kept + [c for c in own if c.get("name") in named]
    return merged


def default_config() -> Config:
    """The built-in defaults: AIBrix itself. Goes through the same checks as a file."""
    return config_from_data(_DEFAULTS, DEFAULTS_LABEL, Path.cwd(), None)


def config_from_data(
    data: Mapping[str, object], label: str, base_dir: Path, path: Path | None
) -> Config:
    """Validate parsed TOML data; relative local paths are taken from `base_dir`."""
    return _Reader(label, base_dir).config(data, path)


def _python_from_v05(old_dockerfile: str) -> list[dict[str, object]]:
    # metadata-service and runtime became one build of Dockerfile.python in v0.5.0 (#1702),
    # which landed between v0.5.0-rc.1 (still the old Dockerfiles) and v0.5.0-rc.2.
    return [
        {"versions": "<v0.5.0-rc.2", "dockerfile": old_dockerfile},
        {"versions": ">=v0.5.0-rc.2", "dockerfile": "build/container/Dockerfile.python"},
    ]


# AIBrix at every tag, as its git history has it (checked against vllm-project/aibrix
# v0.1.0 to v0.7.0: the components by version, the release overlay and chart, the
# dependency images AIBrix mirrors by hand).
_DEFAULTS: dict[str, object] = {
    # One build, published to both: AIBrix's own workflows build once per registry.
    "publish": ["docker.io/aibrix", "ghcr.io/aibrix"],
    "platforms": ["linux/amd64", "linux/arm64"],
    "source": {"git": "https://github.com/vllm-project/aibrix", "ref": "{version}"},
    "components": [
        {"name": "controller-manager", "dockerfile": "build/container/Dockerfile"},
        {"name": "gateway-plugins", "dockerfile": "build/container/Dockerfile.gateway"},
        {
            # before v0.2.0-rc.2 the metadata service was "users" (Dockerfile.users)
            "name": "metadata-service",
            "versions": ">=v0.2.0-rc.2",
            "layout": _python_from_v05("build/container/Dockerfile.metadata"),
        },
        {
            # Dockerfile.kvcache first appears in v0.3.0-rc.1
            "name": "kvcache-watcher",
            "versions": ">=v0.3.0-rc.1",
            "dockerfile": "build/container/Dockerfile.kvcache",
        },
        {"name": "runtime", "layout": _python_from_v05("build/container/Dockerfile.runtime")},
        {
            "name": "vllm-mock",
            "versions": ">=v0.7.0",
            "context": "development/app",
            "dockerfile": "Dockerfile",
        },
    ],
    "mirrors": {
        "beijing": "aibrix-container-registry-cn-beijing.cr.volces.com/aibrix",
        "shanghai": "aibrix-container-registry-cn-shanghai.cr.volces.com/aibrix",
    },
    "preflight": {
        "kustomizations": ["config/overlays/release/kustomization.yaml"],
        "charts": ["dist/chart/Chart.yaml"],
        "dependencies": [
            "docker.io/library/redis:7.4",
            "docker.io/valkey/valkey:8-alpine",
            "docker.io/envoyproxy/envoy:v1.33.2",
            "docker.io/envoyproxy/gateway:v1.2.8",
            "docker.io/aibrix/kuberay-operator:v1.2.1-patch-20250726",
            "docker.io/library/busybox:stable",
        ],
        "final": "refuse",
        "prerelease": "show",
    },
}

# What `extends` may name.
BASES: Mapping[str, Mapping[str, object]] = MappingProxyType({"aibrix": _DEFAULTS})


_MAX_INT = 2**31 - 1
_VALUE_MAX_LENGTH = 4096

T = TypeVar("T")


class _Reader:
    """Walks parsed TOML, checking every key; `fail` raises the ConfigError."""

    def __init__(self, label: str, base_dir: Path) -> None:
        self.label = label
        self.base_dir = base_dir

    def fail(self, key: str, reason: str) -> NoReturn:
        raise ConfigError(self.label, key, reason)

    # -- generic pieces --

    @staticmethod
    def join(parent: str, child: str) -> str:
        shown = child if SIMPLE_KEY.fullmatch(child) else f"[{messages.quote_input(child)}]"
        if not parent:
            return shown
        return f"{parent}{shown}" if shown.startswith("[") else f"{parent}.{shown}"

    def table(self, value: object, key: str, allowed: Sequence[str]) -> dict[str, object]:
        if not isinstance(value, dict):
            self.fail(key, messages.config_wrong_type("a table", _type_name(value)))
        for name in value:
            if name not in allowed:
                self.fail(self.join(key, name), messages.config_unknown_key(allowed))
        return value

    def text(self, value: object, key: str) -> str:
        if not isinstance(value, str):
            self.fail(key, messages.config_wrong_type("a string", _type_name(value)))
        if any(not char.isprintable() for char in value):
            self.fail(key, messages.config_control_character(value))
        if len(value) > _VALUE_MAX_LENGTH:
            self.fail(key, messages.config_too_long(value, _VALUE_MAX_LENGTH))
        if value.startswith("-"):
            self.fail(key, messages.config_leading_dash(value))
        return value

    def integer(self, value: object, key: str, low: int = 1, high: int = _MAX_INT) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(key, messages.config_wrong_type("an integer", _type_name(value)))
        if not low <= value <= high:
            self.fail(key, messages.config_number_out_of_range(value, low, high))
        return value

    def seconds(self, value: object, key: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(key, messages.config_wrong_type("a number of seconds", _type_name(value)))
        number = float(value)
        if not (math.isfinite(number) and 0 < number <= _MAX_INT):
            self.fail(key, messages.config_seconds_out_of_range(value, _MAX_INT))
        return number

    def boolean(self, value: object, key: str) -> bool:
        if not isinstance(value, bool):
            self.fail(key, messages.config_wrong_type("true or false", _type_name(value)))
        return value

    def array(self, value: object, key: str, *, non_empty: bool = False) -> list[object]:
        if not isinstance(value, list):
            self.fail(key, messages.config_wrong_type("an array", _type_name(value)))
        if non_empty and not value:
            self.fail(key, messages.config_empty_list())
        return value

    def unique_items(
        self, value: object, key: str, check: Callable[[object, str], T], *, non_empty: bool
    ) -> tuple[T, ...]:
        seen: dict[T, str] = {}
        for index, item in enumerate(self.array(value, key, non_empty=non_empty)):
            item_key = f"{key}[{index}]"
            checked = check(item, item_key)
            if checked in seen:
                self.fail(item_key, messages.config_duplicate(str(checked), seen[checked]))
            seen[checked] = item_key
        return tuple(seen)

    def relative_path(self, value: object, key: str, base: str, *, dot_ok: bool) -> str:
        text = self.text(value, key)
        if text == "":
            self.fail(key, messages.config_path_empty())
        if "\\" in text:
            self.fail(key, messages.config_path_backslash(text))
        if text.startswith("/"):
            self.fail(key, messages.config_path_absolute(text))
        normal = posixpath.normpath(text)
        if normal == ".." or normal.startswith("../"):
            self.fail(key, messages.config_path_escapes(text, base))
        if normal == "." and not dot_ok:
            self.fail(key, messages.config_path_is_directory(text))
        return normal

    def template(
        self, value: object, key: str, allowed: Sequence[str], needs: Sequence[Sequence[str]]
    ) -> str:
        text = self.text(value, key)
        for match in PLACEHOLDER.finditer(text):
            if match.group(1) not in allowed:
                self.fail(
                    key,
                    messages.config_template_unknown_placeholder(text, match.group(1), allowed),
                )
        if "{" in PLACEHOLDER.sub("", text) or "}" in PLACEHOLDER.sub("", text):
            self.fail(key, messages.config_template_stray_brace(text))
        used = set(PLACEHOLDER.findall(text))
        for options in needs:
            if not used.intersection(options):
                self.fail(key, messages.config_template_needs(text, options))
        return text

    # -- sections --

    def config(self, data: Mapping[str, object], path: Path | None) -> Config:
        top = self.table(
            dict(data),
            "",
            (
                "repository",
                "publish",
                "platforms",
                "staging_tag",
                "source",
                "components",
                "mirrors",
                "approval",
                "permissions",
                "promotion",
                "queue",
                "check_binaries",
                "base_images",
                "preflight",
                "registry",
                "inspect",
                "nightly",
            ),
        )
        for required in ("source", "components"):
            if required not in top:
                self.fail(required, messages.config_missing_key())
        if "repository" not in top and "publish" not in top:
            self.fail("repository", messages.config_missing_key())
        publish = self.publish(top.get("publish"), top.get("repository"))
        repository = publish[0]
        source = self.source(top["source"], "source")
        components = self.components(top["components"], "components", max(publish, key=len))
        platforms = (
            self.platforms(top["platforms"], "platforms")
            if "platforms" in top
            else DEFAULT_PLATFORMS
        )
        staging_tag = self.staging_tag(top.get("staging_tag", "{version}-{arch}"), platforms)
        mirrors = self.mirrors(top.get("mirrors", {}), "mirrors", publish)
        approval = self.approval(top.get("approval", {}), "approval")
        permissions = self.permissions(top.get("permissions", {}), "permissions", approval)
        promotion = self.promotion(top.get("promotion", {}), "promotion", mirrors)
        queue = self.queue(top.get("queue", {}), "queue")
        preflight = self.preflight(top.get("preflight", {}), "preflight")
        registry = self.registry(top.get("registry", {}), "registry")
        inspect = self.inspect(top.get("inspect", {}), "inspect")
        return Config(
            components=components,
            source=source,
            repository=repository,
            platforms=platforms,
            mirrors=mirrors,
            approval=approval,
            permissions=permissions,
            promotion=promotion,
            queue=queue,
            registry=registry,
            staging_tag=staging_tag,
            check_binaries=self.boolean(top.get("check_binaries", True), "check_binaries"),
            base_images=self.base_images(top.get("base_images", {}), "base_images"),
            preflight=preflight,
            inspect=inspect,
            publish=publish,
            nightly=self.nightly(top.get("nightly", {}), "nightly"),
            path=path,
        )

    def publish(self, value: object, repository: object) -> tuple[str, ...]:
        """The publish list: `publish` (primary first), or `repository` alone; when both
        are given, `repository` must be the first of `publish`."""
        if value is None:
            return (self.location(repository, "repository"),)
        locations = self.unique_items(value, "publish", self.location, non_empty=True)
        if repository is not None:
            primary = self.location(repository, "repository")
            if primary != locations[0]:
                self.fail(
                    "repository", messages.config_repository_not_primary(primary, locations[0])
                )
        return tuple(locations)

    def location(self, value: object, key: str) -> str:
        text = self.text(value, key)
        if not is_location(text):
            self.fail(key, messages.config_bad_location(text))
        return text

    def name(self, value: object, key: str, what: str) -> str:
        text = self.text(value, key)
        if not is_component_name(text):
            self.fail(key, messages.config_bad_name(text, what, COMPONENT_NAME_MAX_LENGTH))
        return text

    def source(self, value: object, key: str) -> Source:
        table = self.table(value, key, ("git", "path", "ref"))
        kinds = [k for k in ("git", "path") if k in table]
        if len(kinds) != 1:
            self.fail(key, messages.config_source_kind(("git", "path")))
        ref = self.template(
            table.get("ref", "{version}"), self.join(key, "ref"), VERSION_PLACEHOLDERS, ()
        )
        for sample in SAMPLE_VERSIONS:
            rendered = render(ref, version_values(sample))
            if not is_git_ref(rendered):
                self.fail(self.join(key, "ref"), messages.config_bad_ref(ref, rendered))
        if kinds[0] == "path":
            path_key = self.join(key, "path")
            directory = self.local_path(table["path"], path_key)
            return Source(kind="path", location=str(directory), ref=ref)
        git_key = self.join(key, "git")
        return Source(kind="git", location=self.git_location(table["git"], git_key), ref=ref)

    def local_path(self, value: object, key: str) -> Path:
        text = self.text(value, key)
        if text == "":
            self.fail(key, messages.config_path_empty())
        directory = (self.base_dir / text).resolve()
        if not directory.is_dir():
            self.fail(key, messages.config_not_directory(str(directory)))
        return directory

    def git_location(self, value: object, key: str) -> str:
        text = self.text(value, key)
        if text == "" or any(char.isspace() for char in text) or "::" in text:
            self.fail(key, messages.config_bad_git_url(text))
        if "://" in text:
            # An option smuggled in as a host or user name (ssh://-oProxyCommand=...) is
            # refused along with any transport other than the plain ones.
            try:
                url = urllib.parse.urlsplit(text)
                port = url.port
            except ValueError:
                self.fail(key, messages.config_bad_git_url(text))
            if url.password is not None:
                self.fail(key, messages.config_git_url_password(text))
            user_ok = url.username is None or URL_USER.fullmatch(url.username)
            host = url.netloc.rpartition("@")[2]
            if url.scheme == "file":
                host_ok = host == "" or HOST.fullmatch(host) is not None
            else:
                host_ok = bool(url.hostname) and HOST.fullmatch(host) is not None
            if url.scheme not in GIT_SCHEMES or not user_ok or not host_ok or port == 0:
                self.fail(key, messages.config_bad_git_url(text))
            return text
        scp = SCP_LIKE.fullmatch(text)
        if scp is not None:
            if not HOST.fullmatch(scp.group("host")):
                self.fail(key, messages.config_bad_git_url(text))
            return text
        if ":" in text.split("/")[0]:  # some other transport: "ext:", "fd:", ...
            self.fail(key, messages.config_bad_git_url(text))
        return str(self.local_path(text, key))

    def components(self, value: object, key: str, repository: str) -> tuple[Component, ...]:
        items = self.array(value, key, non_empty=True)
        seen: dict[str, str] = {}
        components = []
        for index, item in enumerate(items):
            item_key = f"{key}[{index}]"
            component = self.component(item, item_key)
            if component.name in seen:
                self.fail(
                    f"{item_key}.name",
                    messages.config_duplicate(component.name, seen[component.name]),
                )
            seen[component.name] = f"{item_key}.name"
            image = f"{repository}/{component.name}"
            if len(image) > IMAGE_NAME_MAX_LENGTH:
                self.fail(
                    f"{item_key}.name", messages.config_image_too_long(image, IMAGE_NAME_MAX_LENGTH)
                )
            components.append(component)
        return tuple(components)

    def version_range(self, value: object, key: str) -> VersionRange:
        text = self.text(value, key)
        try:
            return parse_range(text)
        except VersionError as error:
            self.fail(key, messages.config_bad_range(str(error)))

    def layouts(self, value: object, key: str) -> tuple[Layout, ...]:
        layouts = []
        for index, item in enumerate(self.array(value, key, non_empty=True)):
            item_key = f"{key}[{index}]"
            table = self.table(
                item, item_key, ("versions", "dockerfile", "context", "target", "build_args")
            )
            if "versions" not in table:
                self.fail(self.join(item_key, "versions"), messages.config_missing_key())
            if len(table) == 1:
                self.fail(item_key, messages.config_layout_needs_change())
            versions = self.version_range(table["versions"], self.join(item_key, "versions"))
            paths = self.build_fields(table, item_key)
            layouts.append(
                Layout(
                    versions=versions,
                    dockerfile=paths.dockerfile if "dockerfile" in table else None,
                    context=paths.context if "context" in table else None,
                    build_args=paths.build_args if "build_args" in table else None,
                    target=paths.target,
                )
            )
        return tuple(layouts)

    def build_fields(self, table: Mapping[str, object], key: str) -> Component:
        """The build keys of a component or a layout, checked (name unset)."""
        context = self.relative_path(
            table.get("context", "."), self.join(key, "context"), "the source", dot_ok=True
        )
        dockerfile = self.relative_path(
            table.get("dockerfile", "Dockerfile"),
            self.join(key, "dockerfile"),
            "the build context",
            dot_ok=False,
        )
        target = None
        if "target" in table:
            target_key = self.join(key, "target")
            target = self.text(table["target"], target_key)
            if not STAGE.fullmatch(target):
                self.fail(target_key, messages.config_bad_target(target))
        build_args = self.build_args(table.get("build_args", {}), self.join(key, "build_args"))
        return Component(
            name="", dockerfile=dockerfile, context=context, build_args=build_args, target=target
        )

    def component(self, value: object, key: str) -> Component:
        table = self.table(
            value,
            key,
            (
                "name",
                "dockerfile",
                "context",
                "target",
                "build_args",
                "versions",
                "layout",
                "binaries",
            ),
        )
        if "name" not in table:
            self.fail(self.join(key, "name"), messages.config_missing_key())
        name = self.name(table["name"], self.join(key, "name"), "component")
        versions = (
            self.version_range(table["versions"], self.join(key, "versions"))
            if "versions" in table
            else None
        )
        layouts = (
            self.layouts(table["layout"], self.join(key, "layout")) if "layout" in table else ()
        )
        built = self.build_fields(table, key)
        binaries = self.unique_items(
            table.get("binaries", []), self.join(key, "binaries"), self.image_path, non_empty=False
        )
        return Component(
            name=name,
            dockerfile=built.dockerfile,
            context=built.context,
            build_args=built.build_args,
            target=built.target,
            versions=versions,
            layouts=layouts,
            binaries=binaries,
        )

    def inspect(self, value: object, key: str) -> InspectSettings:
        table = self.table(value, key, ("registry_tags",))
        tags_key = self.join(key, "registry_tags")
        return InspectSettings(
            registry_tags=self.integer(
                table.get("registry_tags", InspectSettings.registry_tags),
                tags_key,
                low=0,
                high=MAX_CARD_REGISTRY_TAGS,
            )
        )

    def preflight(self, value: object, key: str) -> Preflight:
        table = self.table(
            value, key, ("kustomizations", "charts", "dependencies", "final", "prerelease")
        )

        def path(item: object, item_key: str) -> str:
            return self.relative_path(item, item_key, "the source", dot_ok=False)

        def image(item: object, item_key: str) -> str:
            text = self.text(item, item_key)
            try:
                return str(parse_reference(text))
            except InvalidReferenceError as error:
                self.fail(item_key, str(error))

        def policy(name: str, default: PolicyChoice) -> PolicyChoice:
            policy_key = self.join(key, name)
            text = self.text(table.get(name, default), policy_key)
            for choice in POLICY_CHOICES:
                if text == choice:
                    return choice
            self.fail(policy_key, messages.config_bad_policy(text, POLICY_CHOICES))

        return Preflight(
            kustomizations=self.unique_items(
                table.get("kustomizations", []),
                self.join(key, "kustomizations"),
                path,
                non_empty=False,
            ),
            charts=self.unique_items(
                table.get("charts", []), self.join(key, "charts"), path, non_empty=False
            ),
            dependencies=self.unique_items(
                table.get("dependencies", []),
                self.join(key, "dependencies"),
                image,
                non_empty=False,
            ),
            final=policy("final", "refuse"),
            prerelease=policy("prerelease", "show"),
        )

    def image_path(self, value: object, key: str) -> str:
        """An absolute, plain path inside an image (`/usr/local/bin`)."""
        text = self.text(value, key)
        if not text.startswith("/"):
            self.fail(key, messages.config_binary_path_not_absolute(text))
        normal = posixpath.normpath(text)
        if normal != text.rstrip("/") and text != "/":
            self.fail(key, messages.config_binary_path_not_normal(text, normal))
        return normal

    def base_images(self, value: object, key: str) -> Mapping[str, str]:
        """`"golang:1.22" = "mirror.example/library/golang:1.22"`: both image references,
        keyed by the name BuildKit looks them up by."""
        if not isinstance(value, dict):
            self.fail(key, messages.config_wrong_type("a table", _type_name(value)))
        mapped: dict[str, str] = {}
        seen: dict[str, str] = {}
        for name, target in value.items():
            item_key = self.join(key, name)
            try:
                self.text(name, item_key)
                familiar = context_name(name)
            except InvalidReferenceError as error:
                self.fail(item_key, messages.config_bad_base_image(name, str(error)))
            text = self.text(target, item_key)
            try:
                if context_name(text) == familiar:
                    self.fail(item_key, messages.config_base_image_same(name))
            except InvalidReferenceError as error:
                self.fail(item_key, messages.config_bad_base_image(text, str(error)))
            if familiar in seen:
                self.fail(item_key, messages.config_duplicate(familiar, seen[familiar]))
            seen[familiar] = item_key
            mapped[name] = text
        return MappingProxyType(mapped)

    def build_args(self, value: object, key: str) -> Mapping[str, str]:
        if not isinstance(value, dict):
            self.fail(key, messages.config_wrong_type("a table", _type_name(value)))
        args: dict[str, str] = {}
        for name, arg in value.items():
            arg_key = self.join(key, name)
            if not BUILD_ARG_NAME.fullmatch(name):
                self.fail(arg_key, messages.config_bad_build_arg_name(name))
            args[name] = self.text(arg, arg_key)
        return MappingProxyType(args)

    def platforms(self, value: object, key: str) -> tuple[Platform, ...]:
        seen: dict[Platform, str] = {}
        for index, item in enumerate(self.array(value, key, non_empty=True)):
            item_key = f"{key}[{index}]"
            text = self.text(item, item_key)
            try:
                platform = parse_platform(text)
            except PlatformError as error:
                self.fail(item_key, messages.config_bad_platform(str(error)))
            if platform.is_unknown:
                self.fail(item_key, messages.config_unknown_platform(text))
            if platform in seen:
                self.fail(
                    item_key,
                    messages.config_duplicate_platform(text, str(platform), seen[platform]),
                )
            seen[platform] = item_key
        return tuple(seen)

    def staging_tag(self, value: object, platforms: Sequence[Platform]) -> str:
        key = "staging_tag"
        template = self.template(
            value, key, STAGING_PLACEHOLDERS, (("version",), ("arch", "platform"))
        )
        for version in SAMPLE_VERSIONS:
            owners: dict[str, Platform] = {}
            for platform in platforms:
                tag = render(template, platform_values(version, platform))
                if not is_tag(tag):
                    self.fail(key, messages.config_template_bad_tag(template, tag))
                if tag == str(version):
                    self.fail(key, messages.config_template_is_release_tag(template, tag))
                if tag in owners:
                    self.fail(
                        key,
                        messages.config_template_collides(
                            template, str(owners[tag]), str(platform), tag
                        ),
                    )
                owners[tag] = platform
        return template

    def mirrors(self, value: object, key: str, publish: Sequence[str]) -> Mapping[str, str]:
        if not isinstance(value, dict):
            self.fail(key, messages.config_wrong_type("a table", _type_name(value)))
        mirrors: dict[str, str] = {}
        for name, location in value.items():
            mirror_key = self.join(key, name)
            self.name(name, mirror_key, "mirror")
            mirrors[name] = self.location(location, mirror_key)
            if mirrors[name].rstrip("/") in {p.rstrip("/") for p in publish}:
                self.fail(mirror_key, messages.config_mirror_is_repository(mirrors[name]))
        return MappingProxyType(mirrors)

    def approval(self, value: object, key: str) -> ApprovalPolicy:
        table = self.table(
            value,
            key,
            (
                "approvers",
                "approver_groups",
                "approvals_required",
                "allow_self_approval",
                "approval_ttl_seconds",
            ),
        )

        def user(item: object, item_key: str) -> str:
            text = self.text(item, item_key)
            if not SLACK_USER.fullmatch(text):
                self.fail(item_key, messages.config_bad_slack_user(text))
            return text

        def group(item: object, item_key: str) -> str:
            text = self.text(item, item_key)
            if not SLACK_GROUP.fullmatch(text):
                self.fail(item_key, messages.config_bad_slack_group(text))
            return text

        approvers = self.unique_items(
            table.get("approvers", []), self.join(key, "approvers"), user, non_empty=False
        )
        groups = self.unique_items(
            table.get("approver_groups", []),
            self.join(key, "approver_groups"),
            group,
            non_empty=False,
        )
        required_key = self.join(key, "approvals_required")
        required = self.integer(table.get("approvals_required", 1), required_key, 1, 100)
        if approvers and not groups and required > len(approvers):
            self.fail(required_key, messages.config_approvals_unreachable(required, len(approvers)))
        return ApprovalPolicy(
            approvers=approvers,
            approver_groups=groups,
            approvals_required=required,
            allow_self_approval=self.boolean(
                table.get("allow_self_approval", False), self.join(key, "allow_self_approval")
            ),
            approval_ttl_seconds=self.integer(
                table.get("approval_ttl_seconds", 3600), self.join(key, "approval_ttl_seconds")
            ),
        )

    def slack_principal(self, item: object, item_key: str) -> str:
        """A Slack user id (U..., W...) or user group id (S...)."""
        text = self.text(item, item_key)
        if not (SLACK_USER.fullmatch(text) or SLACK_GROUP.fullmatch(text)):
            self.fail(item_key, messages.config_bad_slack_principal(text))
        return text

    def permissions(self, value: object, key: str, approval: ApprovalPolicy) -> Permissions:
        roles_keys = tuple(action.value for action in ROLES)
        table = self.table(value, key, ("channels", *roles_keys))

        def channel(item: object, item_key: str) -> str:
            text = self.text(item, item_key)
            if not SLACK_CHANNEL.fullmatch(text):
                self.fail(item_key, messages.config_bad_slack_channel(text))
            return text

        channels = self.unique_items(
            table.get("channels", []), self.join(key, "channels"), channel, non_empty=False
        )
        roles: dict[Action, Grant] = {}
        for action in ROLES:
            if action.value not in table:
                continue
            listed = self.unique_items(
                table[action.value],
                self.join(key, action.value),
                self.slack_principal,
                non_empty=False,
            )
            roles[action] = Grant(
                users=tuple(p for p in listed if not p.startswith("S")),
                groups=tuple(p for p in listed if p.startswith("S")),
            )
        approvers = Grant(users=approval.approvers, groups=approval.approver_groups)
        return build_permissions(channels, roles, approvers)

    def promotion(self, value: object, key: str, mirrors: Mapping[str, str]) -> Promotion:
        table = self.table(value, key, ("tags", "prereleases", "mirrors"))
        tags_key = self.join(key, "tags")

        def mirror_name(item: object, item_key: str) -> str:
            name = self.text(item, item_key)
            if name not in mirrors:
                self.fail(item_key, messages.config_promotion_mirror_unknown(name, list(mirrors)))
            return name

        def tag_template(item: object, item_key: str) -> str:
            template = self.template(item, item_key, VERSION_PLACEHOLDERS, ())
            for version in SAMPLE_VERSIONS:
                tag = render(template, version_values(version))
                if not is_tag(tag):
                    self.fail(item_key, messages.config_template_bad_tag(template, tag))
                if is_version(tag):
                    self.fail(item_key, messages.config_template_is_release_tag(template, tag))
            return template

        tags = self.unique_items(table.get("tags", []), tags_key, tag_template, non_empty=False)
        prereleases = self.boolean(table.get("prereleases", False), self.join(key, "prereleases"))
        to = self.unique_items(
            table.get("mirrors", []), self.join(key, "mirrors"), mirror_name, non_empty=False
        )
        return Promotion(tags=tags, prereleases=prereleases, mirrors=to)

    def nightly(self, value: object, key: str) -> NightlySettings:
        table = self.table(value, key, ("approval",))
        return NightlySettings(
            approval=self.boolean(table.get("approval", False), self.join(key, "approval"))
        )

    def registry(self, value: object, key: str) -> RegistryConfig:
        table = self.table(value, key, ("budget_seconds", "merge_retry_seconds"))
        defaults = RegistryConfig()
        found = {}
        for name in ("budget_seconds", "merge_retry_seconds"):
            name_key = self.join(key, name)
            seconds = self.seconds(table.get(name, getattr(defaults, name)), name_key)
            if seconds > MAX_REGISTRY_BUDGET_SECONDS:
                self.fail(
                    name_key,
                    messages.config_seconds_out_of_range(seconds, int(MAX_REGISTRY_BUDGET_SECONDS)),
                )
            found[name] = seconds
        return RegistryConfig(**found)

    def queue(self, value: object, key: str) -> QueueSettings:
        table = self.table(
            value,
            key,
            (
                "max_attempts",
                "backoff_base_seconds",
                "backoff_cap_seconds",
                "lease_seconds",
                "key_prefix",
                "retention_days",
                "claim_seconds",
                "renew_seconds",
                "consumer_idle_seconds",
            ),
        )
        defaults = QueueSettings()
        retention_key = self.join(key, "retention_days")
        retention = table.get("retention_days", defaults.retention_days)
        if isinstance(retention, bool) or not isinstance(retention, int | float):
            self.fail(
                retention_key, messages.config_wrong_type("a number of days", _type_name(retention))
            )
        if not (math.isfinite(retention) and 0 < retention <= MAX_RETENTION_DAYS):
            self.fail(
                retention_key, messages.config_retention_out_of_range(retention, MAX_RETENTION_DAYS)
            )
        base = self.seconds(
            table.get("backoff_base_seconds", defaults.backoff_base_seconds),
            self.join(key, "backoff_base_seconds"),
        )
        cap_key = self.join(key, "backoff_cap_seconds")
        cap = self.seconds(table.get("backoff_cap_seconds", defaults.backoff_cap_seconds), cap_key)
        if cap < base:
            self.fail(cap_key, messages.config_cap_below_base(cap, base))
        renew_key = self.join(key, "renew_seconds")
        renew = (
            self.seconds(table["renew_seconds"], renew_key)
            if "renew_seconds" in table
            else defaults.renew_seconds
        )
        lease = table.get("lease_seconds", defaults.lease_seconds)
        if renew and isinstance(lease, int) and renew * 2 > lease:
            self.fail(renew_key, messages.config_renew_too_long(renew, lease))
        prefix_key = self.join(key, "key_prefix")
        prefix = self.text(table.get("key_prefix", defaults.key_prefix), prefix_key)
        if not KEY_PREFIX.fullmatch(prefix):
            self.fail(prefix_key, messages.config_bad_key_prefix(prefix))
        return QueueSettings(
            max_attempts=self.integer(
                table.get("max_attempts", defaults.max_attempts),
                self.join(key, "max_attempts"),
                1,
                100,
            ),
            backoff_base_seconds=base,
            backoff_cap_seconds=cap,
            lease_seconds=self.integer(
                table.get("lease_seconds", defaults.lease_seconds), self.join(key, "lease_seconds")
            ),
            key_prefix=prefix,
            retention_days=float(retention),
            claim_seconds=self.integer(
                table.get("claim_seconds", defaults.claim_seconds),
                self.join(key, "claim_seconds"),
                1,
                3600,
            ),
            renew_seconds=renew,
            consumer_idle_seconds=self.integer(
                table.get("consumer_idle_seconds", defaults.consumer_idle_seconds),
                self.join(key, "consumer_idle_seconds"),
                1,
                30 * 86400,
            ),
        )


def _type_name(value: object) -> str:
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number with a fraction"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return f"a {type(value).__name__}"
