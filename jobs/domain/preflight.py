"""Preflight of the release manifests: do the files a release ships name the version
being released? Pure: takes the text of a file, returns findings with their line.

AIBrix's history has both mistakes: a final release whose `kustomization.yaml` still
named the previous version (#2028), a candidate whose overlay named a tag never
published. A kustomization's `images[]` entry for one of the release's own images must
carry `newTag` = the version; a chart's `appVersion` must be the version without its
`v`. The other `images[]` entries are the third-party images the release deploys: its
dependencies. YAML is read with PyYAML's composer, whose nodes keep their line.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import yaml

from jobs.domain import messages
from jobs.domain.versions import Version

MISSING = "missing"
"""A component's Dockerfile or context that is not in the source at the revision."""
MANIFEST = "manifest"
"""A release manifest that names another version."""
UNREADABLE = "unreadable"
"""A release manifest that is not YAML of the expected shape."""


@dataclass(frozen=True)
class Problem:
    """One finding: its kind, the file (relative to the source root), the line (1-based;
    0 when the finding is about the file as a whole) and the sentence."""

    kind: str
    file: str
    line: int
    message: str

    def sentence(self) -> str:
        if self.kind == MISSING:  # its message names the path already
            return self.message
        return messages.problem_line(self.file, self.line, self.message)


@dataclass(frozen=True)
class Manifests:
    """What the manifests of a release say: the findings, and the third-party images
    they deploy (as written, `name:tag` or `name@digest`)."""

    problems: tuple[Problem, ...] = ()
    dependencies: tuple[str, ...] = ()


def _compose(file: str, text: str) -> yaml.Node | Problem | None:
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = mark.line + 1 if mark is not None else 0
        return Problem(UNREADABLE, file, line, messages.preflight_not_yaml(str(error.problem)))
    except yaml.YAMLError as error:
        return Problem(UNREADABLE, file, 0, messages.preflight_not_yaml(str(error)))


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


def _fields(node: yaml.MappingNode) -> dict[str, yaml.Node]:
    return {key.value: value for key, value in node.value if isinstance(key, yaml.ScalarNode)}


def is_release_image(name: str, components: Sequence[str]) -> bool:
    """An overlay's image is the release's own when its last path component is one of
    the release's component names (`aibrix/runtime` for runtime)."""
    return name.rsplit("/", 1)[-1] in components


def check_kustomization(
    file: str, text: str, version: Version, components: Sequence[str]
) -> Manifests:
    """`images[]` of a kustomization: the release's images must carry `newTag` =
    `version`; every other entry is a dependency."""
    root = _compose(file, text)
    if root is None:
        return Manifests()
    if isinstance(root, Problem):
        return Manifests((root,))
    if not isinstance(root, yaml.MappingNode):
        return Manifests(
            (Problem(UNREADABLE, file, _line(root), messages.preflight_not_mapping(file)),)
        )
    images = _fields(root).get("images")
    if images is None:
        return Manifests()
    if not isinstance(images, yaml.SequenceNode):
        return Manifests(
            (Problem(UNREADABLE, file, _line(images), messages.preflight_not_mapping("images")),)
        )
    problems: list[Problem] = []
    dependencies: list[str] = []
    expected = str(version)
    for entry in images.value:
        if not isinstance(entry, yaml.MappingNode):
            problems.append(
                Problem(
                    UNREADABLE,
                    file,
                    _line(entry),
                    messages.preflight_not_mapping("an images entry"),
                )
            )
            continue
        fields = _fields(entry)
        name_node = fields.get("name")
        if not isinstance(name_node, yaml.ScalarNode):
            continue
        name = str(name_node.value)
        tag = fields.get("newTag")
        tag_text = str(tag.value) if isinstance(tag, yaml.ScalarNode) else None
        if is_release_image(name, components):
            if tag is None or tag_text is None:
                problems.append(
                    Problem(
                        MANIFEST,
                        file,
                        _line(entry),
                        messages.preflight_new_tag_missing(name, expected),
                    )
                )
            elif tag_text != expected:
                problems.append(
                    Problem(
                        MANIFEST,
                        file,
                        _line(tag),
                        messages.preflight_new_tag(name, tag_text, expected),
                    )
                )
            continue
        new_name = fields.get("newName")
        shown = str(new_name.value) if isinstance(new_name, yaml.ScalarNode) else name
        digest = fields.get("digest")
        if isinstance(digest, yaml.ScalarNode):
            dependencies.append(f"{shown}@{digest.value}")
        elif tag_text is not None:
            dependencies.append(f"{shown}:{tag_text}")
        else:
            dependencies.append(shown)
    return Manifests(tuple(problems), tuple(dependencies))


def chart_version(version: Version) -> str:
    """The chart's spelling of a version: no leading `v` (`v0.4.0` -> `0.4.0`)."""
    return str(version)[1:]


def check_chart(file: str, text: str, version: Version) -> Manifests:
    """A Helm `Chart.yaml`: `appVersion` must be the version without its `v`."""
    root = _compose(file, text)
    if root is None:
        return Manifests()
    if isinstance(root, Problem):
        return Manifests((root,))
    if not isinstance(root, yaml.MappingNode):
        return Manifests(
            (Problem(UNREADABLE, file, _line(root), messages.preflight_not_mapping(file)),)
        )
    expected = chart_version(version)
    node = _fields(root).get("appVersion")
    if not isinstance(node, yaml.ScalarNode):
        line = _line(node) if node is not None else 0
        return Manifests(
            (
                Problem(
                    MANIFEST,
                    file,
                    line,
                    messages.preflight_app_version_missing(str(version), expected),
                ),
            )
        )
    if str(node.value) != expected:
        message = messages.preflight_app_version(str(node.value), str(version), expected)
        return Manifests((Problem(MANIFEST, file, _line(node), message),))
    return Manifests()
