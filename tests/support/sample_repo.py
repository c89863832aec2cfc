"""A git repository laid out like AIBrix, made in a test's tmp dir: one commit and tag per
release, each with the layout of its time.

- `old` (up to v0.4.x): `build/container/Dockerfile{,.gateway,.metadata,.kvcache,.runtime}`.
- `new` (from v0.5.0; vllm-mock from v0.7.0): `Dockerfile.python` for metadata-service and
  runtime, and `development/app/Dockerfile`.

Each release carries `config/overlays/release/kustomization.yaml` (its own images at
`newTag: <version>` unless told otherwise, and the third-party `dependencies`) and, when
`chart` is set, `dist/chart/Chart.yaml`. Git runs with a fixed identity and no user
config, so the repository is the same on every machine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

OWN_IMAGES = ("gateway-plugins", "metadata-service", "controller-manager", "runtime")
OLD_DOCKERFILES: tuple[str, ...] = (
    "Dockerfile",
    "Dockerfile.gateway",
    "Dockerfile.metadata",
    "Dockerfile.kvcache",
    "Dockerfile.runtime",
)
NEW_DOCKERFILES = ("Dockerfile", "Dockerfile.gateway", "Dockerfile.kvcache", "Dockerfile.python")

# Lines of the overlay, numbered as the preflight reports them (1-based).
OVERLAY_HEADER = ["apiVersion: kustomize.config.k8s.io/v1beta1", "kind: Kustomization", "images:"]


@dataclass(frozen=True)
class SampleRelease:
    version: str
    layout: str  # "old" or "new"
    overlay_tag: str | None = None  # what the overlay's own images say (default: version)
    overlay_tags: dict[str, str] = field(default_factory=dict)  # per image, overriding
    chart: bool = False
    chart_app_version: str | None = None  # default: the version without its v
    dependencies: Sequence[tuple[str, str]] = ()  # (name, tag) in the overlay
    remove: Sequence[str] = ()  # paths left out of this release's tree
    annotated: bool = True


def overlay_text(release: SampleRelease) -> str:
    lines = list(OVERLAY_HEADER)
    for image in OWN_IMAGES:
        tag = release.overlay_tags.get(image, release.overlay_tag or release.version)
        lines += [f"- name: aibrix/{image}", f"  newTag: {tag}"]
    for name, tag in release.dependencies:
        lines += [f"- name: {name}", f"  newTag: {tag}"]
    return "\n".join(lines) + "\n"


def overlay_line(release: SampleRelease, image: str) -> int:
    """The line of the `newTag` of one of the release's own images in `overlay_text`."""
    return len(OVERLAY_HEADER) + 2 * OWN_IMAGES.index(image) + 2


CHART_APP_VERSION_LINE = 4


def chart_text(release: SampleRelease) -> str:
    plain = release.version.removeprefix("v")
    app = release.chart_app_version if release.chart_app_version is not None else plain
    return f"apiVersion: v2\nname: aibrix\nversion: {plain}\nappVersion: {app}\n"


def _git(root: Path, *args: str) -> str:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(root),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "sample",
        "GIT_AUTHOR_EMAIL": "sample@example.com",
        "GIT_COMMITTER_NAME": "sample",
        "GIT_COMMITTER_EMAIL": "sample@example.com",
        "GIT_AUTHOR_DATE": "2026-01-01T00:00:00Z",
        "GIT_COMMITTER_DATE": "2026-01-01T00:00:00Z",
    }
    done = subprocess.run(
        ["git", "-C", str(root), *args], env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def _write_tree(work: Path, release: SampleRelease) -> None:
    for child in work.iterdir():
        if child.name != ".git":
            shutil.rmtree(child) if child.is_dir() else child.unlink()
    container = work / "build" / "container"
    container.mkdir(parents=True)
    names = OLD_DOCKERFILES if release.layout == "old" else NEW_DOCKERFILES
    for name in names:
        (container / name).write_text(f"FROM busybox\nLABEL file={name}\n")
    if release.layout == "new":
        app = work / "development" / "app"
        app.mkdir(parents=True)
        (app / "Dockerfile").write_text('FROM python:3.10-slim\nCMD ["python", "app.py"]\n')
        (app / "app.py").write_text("print('mock')\n")
    overlay = work / "config" / "overlays" / "release"
    overlay.mkdir(parents=True)
    (overlay / "kustomization.yaml").write_text(overlay_text(release))
    if release.chart:
        chart = work / "dist" / "chart"
        chart.mkdir(parents=True)
        (chart / "Chart.yaml").write_text(chart_text(release))
    for path in release.remove:
        target = work / path
        shutil.rmtree(target) if target.is_dir() else target.unlink()


def make_sample_repo(root: Path, releases: Sequence[SampleRelease]) -> dict[str, str]:
    """A repository at `root` with one commit and tag per release, in order; returns
    each version's commit id."""
    root.mkdir(parents=True, exist_ok=True)
    _git(root, "init", "--quiet", "--initial-branch=main")
    commits: dict[str, str] = {}
    for release in releases:
        _write_tree(root, release)
        _git(root, "add", "--all")
        _git(root, "commit", "--quiet", "--allow-empty", "-m", f"release {release.version}")
        if release.annotated:
            _git(root, "tag", "-a", "-m", release.version, release.version)
        else:
            _git(root, "tag", release.version)
        commits[release.version] = _git(root, "rev-parse", "HEAD")
    return commits


OLD = SampleRelease("v0.3.0-rc.2", "old")
NEW = SampleRelease("v0.7.0", "new", chart=True, annotated=False)
