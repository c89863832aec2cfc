"""One component for one platform, built and pushed by `docker buildx build`.

A build never writes the release tag: with a builder that can push by digest it
pushes untagged (`push-by-digest=true`); with the docker driver, which refuses that,
it pushes a per-platform staging tag such as `v0.3.0-arm64`. The digest comes from
the metadata file Buildx writes. Everything runs from argument lists, never a shell
(the build itself as a process of our own, `jobs.tools.process.stream_lines`, so a cancel can
stop it; the rest through python-on-whales); every value was validated by the config
and the release request before it gets here.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from python_on_whales import docker
from python_on_whales.components.buildx.models import BuilderInspectResult

from jobs.domain import messages
from jobs.domain.base_images import build_contexts, rewrite_from_lines, supports_named_contexts
from jobs.domain.errors import Failed, Refused
from jobs.domain.platforms import Platform, parse_platform
from jobs.domain.references import validate_digest
from jobs.tools import process
from jobs.tools.buildx_command import buildx_build_command

LOG_TAIL_LINES = 30
# The image config label holding the job's idempotency key (see BuildRequest.labels).
IDEMPOTENCY_LABEL = "org.aibrix.release-bot.idempotency-key"
_STEP = re.compile(r"^#\d+ \[(?:[\w.-]+ )?(\d+)/(\d+)\]")
_STEP_HEADER = re.compile(r"^#(\d+) \[(?:[\w.-]+ )?(\d+/\d+)\]")
_PUSHING = re.compile(r"^#\d+ (?:pushing|exporting to image)", re.IGNORECASE)


class BuildError(Failed):
    """A build failed; `log_tail` holds the last lines of its log."""

    def __init__(self, message: str, log_tail: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.log_tail = log_tail


class BuilderError(Refused):
    """The Buildx builder cannot be used for the requested platform."""


class BuildCancelled(RuntimeError):
    pass


@dataclass(frozen=True)
class Progress:
    """A build's progress as the notifier shows it: step N of M, or a phase."""

    phase: str  # "building", "pushing"
    step: int = 0
    total: int = 0


_OUTPUT = re.compile(r"^#(\d+) \d+\.\d+ (.*\S)")
_ERROR = re.compile(r"^#(\d+) ERROR")


def failure_summary(tail: tuple[str, ...] | list[str]) -> str | None:
    """The step that failed and its last line of output, from a plain build log:
    "step 7/9 failed: runtime: unsupported on aarch64"."""
    steps: dict[str, str] = {}
    output: dict[str, str] = {}
    for line in tail:
        if match := _STEP_HEADER.match(line):
            steps[match.group(1)] = match.group(2)
        elif match := _OUTPUT.match(line):
            output[match.group(1)] = match.group(2)
        elif match := _ERROR.match(line):
            vertex = match.group(1)
            step = steps.get(vertex)
            what = output.get(vertex, line.split("ERROR", 1)[1].lstrip(": ").strip())
            return f"step {step} failed: {what}" if step else what
    return None


def parse_progress(line: str) -> Progress | None:
    """Progress from a line of Buildx's plain log (`#7 [3/5] RUN ...`, `#9 pushing ...`)."""
    match = _STEP.match(line)
    if match:
        return Progress("building", int(match.group(1)), int(match.group(2)))
    if _PUSHING.match(line):
        return Progress("pushing")
    return None


@dataclass(frozen=True)
class BuilderInfo:
    name: str
    driver: str
    platforms: tuple[Platform, ...]
    buildkit: str = ""  # the BuildKit version its first node reports, e.g. v0.8+unknown

    @property
    def can_push_by_digest(self) -> bool:
        # The docker driver refuses push-by-digest ("please create a new builder instance").
        return self.driver != "docker"


# How long each docker CLI call of the builder check may take. Buildx waits up to 20 s
# per unreachable node; past this the CLI is stuck (Go 1.23+ under QEMU 7.2 was seen never to
# return from starting its plugin), and a worker must say so instead of starting forever.
BUILDER_CHECK_SECONDS = 120.0


def _docker(*args: str) -> str:
    """The output of one docker CLI call of the builder check, such as `buildx inspect`
    (BuilderError if it fails or does not answer in time)."""
    what = f"docker {' '.join(args[:2])}"
    try:
        return process.run([*docker.buildx.docker_cmd, *args], timeout=BUILDER_CHECK_SECONDS).stdout
    except process.CommandError as error:
        if error.returncode is None:
            raise BuilderError(
                f"{what} did not answer within {BUILDER_CHECK_SECONDS:.0f} s: "
                "the docker CLI or the Docker engine is stuck"
            ) from None
        raise BuilderError(error.stderr.strip() or f"{what} failed") from None


def inspect_builder(name: str | None) -> BuilderInfo:
    """The builder `name` (the current one if None) as `docker buildx ls` describes it;
    `inspect` only names it, as its text output has no JSON form."""
    label = name or "(default)"
    try:
        shown = _docker("buildx", "inspect", *([name] if name else []))
        listed = _docker("buildx", "ls", "--format", "{{json .}}")
    except BuilderError as error:
        raise BuilderError(f"the Buildx builder {label} cannot be used: {error}") from None
    first = shown.splitlines()[0] if shown.strip() else ""
    found_name = first.partition(":")[2].strip() if first.startswith("Name:") else ""
    builder = None
    for line in listed.splitlines():
        try:
            entry = BuilderInspectResult(**json.loads(line))
        except (ValueError, TypeError):
            continue  # a warning line, not a builder
        if entry.name == found_name:
            builder = entry
            break
    if builder is None:
        raise BuilderError(f"the Buildx builder {label} cannot be used: buildx ls does not list it")
    platforms: list[Platform] = []
    for node in builder.nodes or []:
        for text in node.platforms or []:
            try:
                platforms.append(parse_platform(text.strip().rstrip("*")))
            except ValueError:
                continue
    nodes = builder.nodes or []
    return BuilderInfo(
        found_name,
        builder.driver or "",
        tuple(dict.fromkeys(platforms)),
        (nodes[0].version or "") if nodes else "",
    )


def current_context() -> str:
    """The Docker context the CLI uses now (DOCKER_CONTEXT, else the configured one)."""
    try:
        return _docker("context", "inspect", "--format", "{{.Name}}").strip() or "default"
    except BuilderError as error:
        raise BuilderError(f"the current Docker context cannot be read: {error}") from None


def check_builder(name: str | None, platform: Platform) -> BuilderInfo:
    """Refuse, with the reason, a builder that cannot build `platform`, or that Buildx
    would refuse to build with: the docker driver of a context other than the current one
    inspects fine, but every build on it fails ("use `docker --context=NAME buildx`")."""
    info = inspect_builder(name)
    if name and info.driver == "docker" and name != (current := current_context()):
        raise BuilderError(messages.builder_of_another_context(name, current))
    if platform not in info.platforms:
        available = ", ".join(str(p) for p in info.platforms) or "none"
        raise BuilderError(
            f"the Buildx builder {info.name} cannot build {platform}; it can build {available}. "
            "Enable QEMU binfmt for that architecture or choose another builder with --builder"
        )
    return info


@dataclass(frozen=True)
class BuildRequest:
    context: Path
    dockerfile: Path
    platform: Platform
    image: str  # repository without tag, e.g. 127.0.0.1:5000/aibrix/runtime
    staging_tag: str
    metadata_file: Path
    build_args: Mapping[str, str] = field(default_factory=dict)
    target: str | None = None
    builder: str | None = None
    push_by_digest: bool = False
    # Images named in FROM -> the reference to build from instead (validated by the config).
    base_images: Mapping[str, str] = field(default_factory=dict)
    # Written into the image config: the job's idempotency key, so a worker that reclaims
    # the job can tell from the registry that the staging tag already holds its result.
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class BuildResult:
    digest: str
    pushed_as: str  # what was pushed: repo:staging-tag, or repo@digest
    log_tail: tuple[str, ...]


def redirect_base_images(request: BuildRequest, named_contexts: bool) -> dict[str, Any]:
    """The build's arguments that take its base images from the configured references:
    named build contexts when the builder has them, else a copy of the Dockerfile (beside
    the metadata file, never in the source) whose mapped FROM lines name them."""
    if not request.base_images:
        return {}
    if named_contexts:
        return {"build_contexts": build_contexts(request.base_images)}
    try:
        text = request.dockerfile.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise BuildError(f"the Dockerfile cannot be read: {error}") from None
    rewritten, redirected = rewrite_from_lines(text, request.base_images, request.build_args)
    if not redirected:
        return {}
    folder = request.metadata_file.parent / "dockerfile"
    folder.mkdir(parents=True, exist_ok=True)
    copy = folder / request.dockerfile.name
    copy.write_text(rewritten, encoding="utf-8")
    ignore = request.dockerfile.with_name(request.dockerfile.name + ".dockerignore")
    if ignore.is_file():  # BuildKit reads a Dockerfile's own ignore file from beside it
        shutil.copyfile(ignore, folder / ignore.name)
    return {"file": copy}


def _build_kwargs(request: BuildRequest) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "file": request.dockerfile,
        "platforms": [str(request.platform)],
        "build_args": dict(request.build_args),
        "metadata_file": request.metadata_file,
        "progress": "plain",
        "stream_logs": True,
        "provenance": False,
    }
    if request.labels:
        kwargs["labels"] = dict(request.labels)
    if request.target:
        kwargs["target"] = request.target
    if request.builder:
        kwargs["builder"] = request.builder
    if request.push_by_digest:
        kwargs["output"] = {
            "type": "image",
            "name": request.image,
            "push-by-digest": "true",
            "name-canonical": "true",
            "push": "true",
        }
    else:
        kwargs["tags"] = [f"{request.image}:{request.staging_tag}"]
        kwargs["push"] = True
    return kwargs


def run_build(
    request: BuildRequest,
    on_progress: Callable[[Progress], None] = lambda _: None,
    should_stop: Callable[[], bool] = lambda: False,
) -> BuildResult:
    """Build and push; blocking (run it in a thread from asyncio code)."""
    tail: deque[str] = deque(maxlen=LOG_TAIL_LINES)
    request.metadata_file.unlink(missing_ok=True)
    kwargs = _build_kwargs(request)
    if request.base_images:
        version = inspect_builder(request.builder).buildkit
        kwargs.update(redirect_base_images(request, supports_named_contexts(version)))
    # Our own process, not python-on-whales' stream: a stop must really stop Buildx, and
    # is looked at every 0.1 s, not only when a log line comes (`process.stream_lines`).
    command = buildx_build_command(docker.buildx.docker_cmd, request.context, kwargs)
    try:
        for line in process.stream_lines(command, should_stop):
            line = line.rstrip("\n")
            tail.append(line)
            progress = parse_progress(line)
            if progress is not None:
                on_progress(progress)
    except process.Stopped:
        raise BuildCancelled("the release was cancelled") from None
    except (process.CommandError, OSError) as error:
        summary = failure_summary(tuple(tail))
        raise BuildError(
            summary or f"docker buildx build for {request.platform} failed: {error}",
            tuple(tail),
        ) from None
    try:
        metadata = json.loads(request.metadata_file.read_text())
        digest = validate_digest(str(metadata["containerimage.digest"]))
    except (OSError, ValueError, KeyError):
        raise BuildError("Buildx wrote no image digest to its metadata file", tuple(tail)) from None
    pushed = (
        f"{request.image}@{digest}"
        if request.push_by_digest
        else f"{request.image}:{request.staging_tag}"
    )
    return BuildResult(digest, pushed, tuple(tail))


METADATA_PREFIX = "aibrix-meta-"


@contextlib.contextmanager
def metadata_dir(workdir: Path) -> Iterator[Path]:
    """A private directory for one build's metadata file (and a rewritten Dockerfile),
    removed on every way out: success, failure, cancel, a lost lease."""
    workdir.mkdir(parents=True, exist_ok=True)
    prefix = f"{METADATA_PREFIX}{os.getpid()}-"
    with tempfile.TemporaryDirectory(prefix=prefix, dir=workdir) as name:
        yield Path(name)


def sweep_metadata_dirs(workdir: Path) -> int:
    """Remove the metadata directories of processes that are gone (a worker killed
    mid-build cannot remove its own); how many were removed."""
    removed = 0
    for path in workdir.glob(f"{METADATA_PREFIX}*-*"):
        pid_text = path.name[len(METADATA_PREFIX) :].split("-", 1)[0]
        if not pid_text.isdigit() or _alive(int(pid_text)):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed += 1
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
