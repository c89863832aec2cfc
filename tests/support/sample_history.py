"""The sample project as a git repository with a history, made from `sample/` in a tmp dir:
the pre-v0.5 layout at its older tags, the current one (AIBrix today) at its newer ones.

- pre-v0.5 (`v0.4.0-rc.1`, `v0.4.1`): metadata-service and runtime each have a Dockerfile
  of their own (`sample/history/pre-v0.5/`), there is no `Dockerfile.python` and no
  `development/app`.
- current (`v0.7.0-rc.1`, `v0.7.0`): `sample/` as it is.

Every tag's release overlay and chart name that tag's version, so the preflight passes;
the bot's configs (`*.toml`), the README and `history/` itself are left out (they are
about the sample, not part of it). Used by the tests and by the demo (which imports
`tests.support` already, and like it is never shipped). Git runs with a fixed identity
and dates and no user config, so the repository is the same on every machine.

    python -m tests.support.sample_history DIR    # make it by hand
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.conftest import Lab

SAMPLE = Path(__file__).resolve().parents[2] / "sample"
OVERLAY = "config/overlays/release/kustomization.yaml"
CHART = "dist/chart/Chart.yaml"
LEFT_OUT = ("history", "README.md", ".gitignore")


@dataclass(frozen=True)
class Tag:
    version: str
    layout: str  # "pre-v0.5" or "current"


HISTORY = (
    Tag("v0.4.0-rc.1", "pre-v0.5"),
    Tag("v0.4.1", "pre-v0.5"),
    Tag("v0.7.0-rc.1", "current"),
    Tag("v0.7.0", "current"),
)
OLD_TAG = "v0.4.1"  # the last release of the pre-v0.5 layout
NEW_TAG = "v0.7.0"  # AIBrix's layout today: six components, vllm-mock included


@dataclass(frozen=True)
class LabAddresses:
    """Where the lab's plain registry and mirror listen (host:port); the defaults are
    scripts/lab's, the addresses the sample's configs and release overlay name."""

    registry: str = "127.0.0.1:5000"
    mirror: str = "127.0.0.1:5002"

    def rewrite(self, text: str) -> str:
        """`text` (a sample config or manifest) naming these addresses where it names the
        defaults: a lab on other ports (AIBRIX_LAB_*_PORT) has nothing at the defaults,
        or another lab's registries."""
        default = LabAddresses()
        named = {default.registry: self.registry, default.mirror: self.mirror}
        pattern = "|".join(re.escape(address) for address in named)
        return re.sub(rf"(?:{pattern})(?![0-9])", lambda found: named[found.group(0)], text)


def lab_addresses(lab: Lab) -> LabAddresses:
    return LabAddresses(lab.registry, lab.mirror_registry)


def sample_on_lab(target: Path, lab: LabAddresses) -> Path:
    """A copy of `sample/` as it is, its release overlay naming `lab`'s registry."""
    shutil.copytree(SAMPLE, target)
    overlay = target / OVERLAY
    overlay.write_text(lab.rewrite(overlay.read_text()))
    return target


def sample_config(lab: Lab, tmp_path: Path, source_line: str, key_prefix: str) -> Path:
    """sample/aibrix-sample.toml on this lab, with another source and the test's key prefix."""
    text = lab_addresses(lab).rewrite((SAMPLE / "aibrix-sample.toml").read_text())
    text = re.sub(r'(?m)^path = "\."$', source_line, text)
    text = re.sub(r'(?m)^key_prefix = ".*"$', f'key_prefix = "{key_prefix}"', text)
    path = tmp_path / "aibrix-sample.toml"
    path.write_text(text)
    return path


def _git(root: Path, *args: str, date: str = "2026-01-01T00:00:00Z") -> str:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(root),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "sample",
        "GIT_AUTHOR_EMAIL": "sample@example.com",
        "GIT_COMMITTER_NAME": "sample",
        "GIT_COMMITTER_EMAIL": "sample@example.com",
        "GIT_AUTHOR_DATE": date,
        "GIT_COMMITTER_DATE": date,
    }
    done = subprocess.run(
        ["git", "-C", str(root), *args], env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def with_version(text: str, version: str) -> str:
    """A release overlay or chart naming `version`: every `newTag: vX.Y.Z...` (the
    project's own images; third-party ones are pinned otherwise) and the chart's
    `version` and `appVersion` (without the `v`)."""
    text = re.sub(r"(?m)^(\s*newTag:\s*)v\d+\.\d+\.\d+\S*$", rf"\g<1>{version}", text)
    return re.sub(r"(?m)^(version|appVersion):.*$", rf"\g<1>: {version[1:]}", text)


def _write_tree(work: Path, tag: Tag, sample: Path, lab: LabAddresses) -> None:
    for child in work.iterdir():
        if child.name != ".git":
            shutil.rmtree(child) if child.is_dir() else child.unlink()
    for child in sample.iterdir():
        if child.name in LEFT_OUT or child.suffix == ".toml":
            continue
        if child.is_dir():
            shutil.copytree(child, work / child.name)
        else:
            shutil.copy2(child, work / child.name)
    if tag.layout == "pre-v0.5":
        (work / "build" / "container" / "Dockerfile.python").unlink()
        shutil.rmtree(work / "development")
        shutil.copytree(sample / "history" / "pre-v0.5", work, dirs_exist_ok=True)
    for manifest in (OVERLAY, CHART):
        path = work / manifest
        path.write_text(lab.rewrite(with_version(path.read_text(), tag.version)))


def make_sample_history(
    root: Path,
    history: tuple[Tag, ...] = HISTORY,
    sample: Path = SAMPLE,
    lab: LabAddresses = LabAddresses(),
) -> dict[str, str]:
    """The repository at `root`, one commit and annotated tag per entry of `history`, in
    order, on branch main, its release overlay naming `lab`'s registry; returns each
    version's commit id."""
    root.mkdir(parents=True, exist_ok=True)
    _git(root, "init", "--quiet", "--initial-branch=main")
    commits: dict[str, str] = {}
    for day, tag in enumerate(history, start=1):
        date = f"2026-01-{day:02d}T00:00:00Z"
        _write_tree(root, tag, sample, lab)
        _git(root, "add", "--all")
        _git(root, "commit", "--quiet", "-m", f"release {tag.version}", date=date)
        _git(root, "tag", "-a", "-m", tag.version, tag.version, date=date)
        commits[tag.version] = _git(root, "rev-parse", "HEAD")
    return commits


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m tests.support.sample_history DIR")
    for version, commit in make_sample_history(Path(sys.argv[1])).items():
        print(f"{version} {commit}")
