"""The core's sentences: what a user reads about versions, the configuration, the
release pipeline, approvals, permissions, the registry, mirror sync and immutability.

The core raises and returns these; the Slack adapter (`handlers.messages`) and the
terminal (`bot.messages`) add only their own wording on top. Kept in one catalogue per
topic so wording stays consistent and no secret can slip into a message by accident:
functions here take values, never credentials.
"""

from __future__ import annotations

from collections.abc import Sequence

from jobs.domain.copy_plan import DriftData, SyncData
from jobs.domain.elf import BinaryCheck, BinaryStatus
from jobs.domain.platforms import Platform
from jobs.domain.verdict import EntryStatus, Outcome, Verdict

# ---- inspection --------------------------------------------------------------------------


def short_digest(digest: str | None, length: int = 12) -> str:
    if not digest:
        return "-"
    algorithm, _, hex_part = digest.partition(":")
    return f"{algorithm}:{hex_part[:length]}"


def platform_list(platforms: Sequence[Platform]) -> str:
    names = [str(p) for p in platforms]
    if len(names) <= 1:
        return "".join(names)
    return ", ".join(names[:-1]) + " and " + names[-1]


def verdict_problems(subject: str, verdict: Verdict) -> list[str]:
    """One plain sentence per problem, e.g.
    "runtime v0.3.0-rc.2 is missing linux/amd64; the index has linux/arm64 only"."""
    if verdict.outcome is Outcome.ERROR:
        return [f"{subject} cannot be read: {verdict.error}"]
    problems = []
    for entry in verdict.entries:
        if entry.status is EntryStatus.MISMATCH:
            problems.append(
                f"{subject}: the {entry.label} entry {short_digest(entry.digest)} is really "
                f"{entry.actual} (its image config says so)"
            )
        elif entry.status is EntryStatus.UNRESOLVABLE:
            problems.append(
                f"{subject}: the {entry.label} entry {short_digest(entry.digest)} cannot be "
                f"resolved: {entry.reason}"
            )
    if verdict.missing:
        present = verdict.present
        if not verdict.is_index and present:
            has = f"the tag is a single {present[0]} image, not a multi-platform index"
        elif present:
            has = f"the index has {platform_list(present)} only"
        else:
            has = "it has no usable platform at all"
        problems.append(f"{subject} is missing {platform_list(verdict.missing)}; {has}")
    return problems


def duplicate_entry() -> str:
    """Beside an index entry whose platform an earlier entry already has (os.version and
    os.features included, so two Windows builds are never duplicates)."""
    return "the same platform as an earlier entry; docker pull takes the first"


def verdict_headline(outcome: Outcome) -> str:
    return {
        Outcome.OK: "ok: every required platform is present",
        Outcome.MISSING: "MISSING: a required platform is absent",
        Outcome.MISMATCH: "MISMATCH: an entry is not what it claims or cannot be resolved",
        Outcome.ERROR: "ERROR: the reference could not be read",
    }[outcome]


# ---- the binary architecture check (jobs/usecases/binaries.py) ---------------------------


def binary_problems(subject: str, checks: Sequence[BinaryCheck]) -> list[str]:
    """One sentence per file of the wrong architecture, missing or unreadable, e.g.
    "gateway-plugins v0.7.0: the linux/arm64 image's /gateway-plugins (entrypoint) is built
    for x86-64, not arm64"."""
    problems = []
    for check in checks:
        image = f"the {check.platform} image"
        for found in check.problems:
            path, via = _image_text(found.path), _image_text(found.via)
            if found.status is BinaryStatus.MISMATCH and found.header is not None:
                problems.append(
                    f"{subject}: {image}'s {path} ({via}) is built for "
                    f"{found.header.label}, not {check.platform.architecture}"
                )
            elif found.status is BinaryStatus.MISSING:
                problems.append(f"{subject}: {image} has no {path} ({via})")
            else:
                problems.append(
                    f"{subject}: {image}'s binaries could not be checked: {found.detail}"
                )
    return problems


def _image_text(text: str, limit: int = 160) -> str:
    """A path read from an image (a tar member, a `#!` line) as a sentence may show it:
    printable ASCII, bounded; anything else is escaped as `quote_input` escapes it."""
    if text.isascii() and text.isprintable() and len(text) <= limit and "`" not in text:
        return text
    return quote_input(text, limit)


def binary_layer_zstd() -> str:
    return "a layer is zstd-compressed, which this check cannot read"


def binary_layer_not_tar() -> str:
    return "a layer is not a valid tar archive"


def binary_layer_gzip_corrupt() -> str:
    return "a layer's gzip stream is corrupt"


def binary_layer_too_many(limit: int) -> str:
    return f"a layer has more than {limit} entries"


def binary_layer_stalled(seconds: float) -> str:
    return f"a layer stopped arriving for {seconds:g} seconds"


def binary_not_an_image() -> str:
    return "the index entry is an index, not an image"


def binary_files_unsettled(passes: int) -> str:
    return f"the files to check were still not all read after {passes} reads of the layers"


def config_binary_path_not_absolute(value: str) -> str:
    return f"{quote_input(value)} is not an absolute path in the image; write it as /usr/bin/NAME"


def config_binary_path_not_normal(value: str, normal: str) -> str:
    return f"{quote_input(value)} is not a plain path; write it as {quote_input(normal)}"


def config_bad_base_image(value: str, error: str) -> str:
    return f"{quote_input(value)} is not an image reference: {error}"


def config_base_image_same(name: str) -> str:
    return f"{quote_input(name)} is mapped to the image it names"


# ---- release inputs: versions, component names, mirrors ----------------------------------


QUOTE_LIMIT = 80


VERSION_EXPECTED = "expected vMAJOR.MINOR.PATCH[-PRERELEASE] such as v0.3.0 or v0.3.0-rc.2"


def quote_input(text: str, limit: int = QUOTE_LIMIT) -> str:
    """User text made safe to show inside a sentence: quoted like `repr`, with every control,
    non-ASCII and quote character escaped (so a Cyrillic lookalike of `e` shows as `\\u0435` and a
    newline as `\\n`), and no more than `limit` characters of it, escapes counted."""
    shown = min(len(text), limit)
    while len(ascii(text[:shown])) > limit + 2:  # + the two quotes
        shown -= 1
    if shown == len(text):
        return ascii(text)
    return f"{text[:shown]!a}... ({len(text)} characters)"


def char_name(char: str) -> str:
    return f"{char!a} (U+{ord(char):04X})"


def version_empty() -> str:
    return f"no release version given; {VERSION_EXPECTED}"


def version_too_long(text: str, limit: int) -> str:
    return (
        f"{quote_input(text)} is not a release version: it is longer than {limit} "
        f"characters, the most a tag holds; {VERSION_EXPECTED}"
    )


def version_bad_character(text: str, char: str) -> str:
    return (
        f"{quote_input(text)} is not a release version: it contains {char_name(char)}, "
        f"and only ASCII letters, digits, '.' and '-' are allowed; {VERSION_EXPECTED}"
    )


def version_missing_v(text: str) -> str:
    return (
        f"{quote_input(text)} is not a release version: it must start with a lowercase 'v'; "
        f"{VERSION_EXPECTED}"
    )


def version_build_metadata(text: str) -> str:
    return (
        f"{quote_input(text)} is not a release version: build metadata ('+...') cannot be "
        f"part of a tag; {VERSION_EXPECTED}"
    )


def version_leading_zero(text: str, number: str) -> str:
    return (
        f"{quote_input(text)} is not a release version: the number {quote_input(number)} "
        f"has a leading zero; {VERSION_EXPECTED}"
    )


def version_empty_prerelease(text: str) -> str:
    return (
        f"{quote_input(text)} is not a release version: a prerelease identifier is empty "
        f"(nothing between '-' or '.' and the next '.' or the end); {VERSION_EXPECTED}"
    )


def version_malformed(text: str) -> str:
    return f"{quote_input(text)} is not a release version; {VERSION_EXPECTED}"


def version_unusable(version: str, what: str, made: str) -> str:
    """`what` is "tag" or "git ref"."""
    return (
        f"{quote_input(version)} cannot be released with this configuration: it makes the "
        f"{what} {quote_input(made)}, which is too long or not valid"
    )


def version_is_staging_tag(version: str, platform: str) -> str:
    return (
        f"{quote_input(version)} cannot be released: it has the form of a staging tag (the "
        f"{platform} build of another version is pushed to a tag like it), and every tag "
        "must have a single writer"
    )


def name_list(names: Sequence[str]) -> str:
    return ", ".join(names) if names else "(none)"


def component_empty(known: Sequence[str]) -> str:
    return f"no component given; the configured components are: {name_list(known)}"


def component_unknown(name: str, known: Sequence[str]) -> str:
    return (
        f"{quote_input(name)} is not a component of this project; "
        f"the configured components are: {name_list(known)}"
    )


def mirror_unknown(text: str, known: Sequence[str]) -> str:
    return (
        f"{quote_input(text)} is neither a configured mirror ({name_list(known)}) nor a "
        "registry location HOST[:PORT][/NAMESPACE] such as registry.example.com/aibrix"
    )


# ---- configuration file ------------------------------------------------------------------


def config_error(file: str, key: str, reason: str) -> str:
    """`aibrix.toml: components[2].dockerfile: '/etc/passwd' is an absolute path; ...`."""
    return f"{file}: {key}: {reason}" if key else f"{file}: {reason}"


def config_unreadable(error: str) -> str:
    return f"cannot be read: {error}"


def config_not_utf8() -> str:
    return "is not UTF-8 text"


def config_not_toml(detail: str) -> str:
    return f"is not valid TOML: {detail}"


def config_unknown_key(allowed: Sequence[str]) -> str:
    return f"unknown key; the keys allowed here are: {name_list(sorted(allowed))}"


def config_missing_key() -> str:
    return "is required"


def config_wrong_type(expected: str, got: str) -> str:
    return f"must be {expected}, not {got}"


def config_empty_list() -> str:
    return "must not be empty"


def config_number_out_of_range(value: object, low: object, high: object) -> str:
    return f"{value} is out of range; expected a number from {low} to {high}"


def config_control_character(value: str) -> str:
    return (
        f"{quote_input(value)} contains a control character (a newline, NUL or the like), "
        "which is not allowed"
    )


def config_leading_dash(value: str) -> str:
    return (
        f"{quote_input(value)} starts with '-', which is not allowed (it could be read as a "
        "command-line option)"
    )


def config_too_long(value: str, limit: int) -> str:
    return f"{quote_input(value)} is longer than {limit} characters"


def config_bad_name(value: str, what: str, limit: int) -> str:
    return (
        f"{quote_input(value)} is not a valid {what} name; expected lowercase letters and "
        "digits, separated by single '.', '_' or '-' (such as gateway-plugins), "
        f"at most {limit} characters"
    )


def config_duplicate(value: str, first_key: str) -> str:
    return f"{quote_input(value)} is already given at {first_key}"


def config_path_empty() -> str:
    return "must be a relative path, not empty"


def config_path_absolute(value: str) -> str:
    return (
        f"{quote_input(value)} is an absolute path; expected a path relative to the "
        "directory it belongs to, such as build/container/Dockerfile"
    )


def config_path_escapes(value: str, base: str) -> str:
    return f"{quote_input(value)} leads out of {base} with '..'"


def config_path_backslash(value: str) -> str:
    return f"{quote_input(value)} contains a backslash; use '/' between directories"


def config_path_is_directory(value: str) -> str:
    return f"{quote_input(value)} names a directory, not a Dockerfile"


def config_path_outside(value: str, base: str) -> str:
    return f"{quote_input(value)} resolves (through a symbolic link) to a place outside {base}"


def config_path_missing(value: str, where: str) -> str:
    return f"{quote_input(value)} does not exist in {where}"


def config_not_directory(value: str) -> str:
    return f"{quote_input(value)} is not a directory"


def config_bad_build_arg_name(name: str) -> str:
    return (
        f"{quote_input(name)} is not a valid build argument name; expected a letter or '_' "
        "followed by letters, digits or '_', such as BASE_IMAGE"
    )


def config_bad_target(value: str) -> str:
    return (
        f"{quote_input(value)} is not a valid build stage name; expected letters, digits, "
        "'.', '_' or '-', starting with a letter or digit"
    )


def config_bad_platform(error: str) -> str:
    return error


def config_unknown_platform(value: str) -> str:
    return f"{quote_input(value)} is not a platform an image runs on"


def config_duplicate_platform(value: str, platform: str, first_key: str) -> str:
    return f"{quote_input(value)} is {platform}, already given at {first_key}"


def config_bad_location(value: str) -> str:
    return (
        f"{quote_input(value)} is not a registry location; expected HOST[:PORT][/NAMESPACE] "
        "with a host name that has a '.' or a ':port' (or is localhost) and lowercase "
        "path components, such as docker.io/aibrix or 127.0.0.1:5000/aibrix-sample"
    )


def dependencies_not_synced(version: str, reasons: Sequence[str]) -> str:
    return f"the dependency images of {version} were not copied to the mirrors: " + "; ".join(
        reasons
    )


def nightly_bad_branch(text: str) -> str:
    return (
        f"{quote_input(text)} is not a branch name; give a git branch such as main or "
        "release-0.7 (letters, digits, '.', '_', '-', '/'; not starting with '-')"
    )


def nightly_not_a_commit(text: str) -> str:
    return f"{quote_input(text)} is not a full commit id (40 hex digits)"


def nightly_reserved(version: str) -> str:
    return f"{version} is reserved for nightly builds; ask for one with `nightly [BRANCH]`"


def nightly_needs_git(location: str) -> str:
    return f"a nightly builds a branch head, and the source {location} is a directory, not git"


def nightly_no_branch(location: str, branch: str) -> str:
    return f"{location} has no branch {quote_input(branch)}"


def nightly_already(branch: str, revision: str) -> str:
    return (
        f"the head of {branch}, {revision}, was built and published as nightly already; "
        "nothing to do until the branch moves"
    )


def publish_copy_failed(target: str, reason: str) -> str:
    return f"publish registry {target} does not hold the verified index: {reason}"


def publish_holds_other(held: str | None, digest: str) -> str:
    if held is None:
        return f"the tag is missing there (expected {short_digest(digest)})"
    return f"the tag holds {short_digest(held)}, not the verified {short_digest(digest)}"


def config_repository_not_primary(repository: str, primary: str) -> str:
    return (
        f"{quote_input(repository)} must be the first entry of publish ({quote_input(primary)}), "
        "the primary registry the merge writes; or leave repository out"
    )


def config_mirror_is_repository(value: str) -> str:
    return f"{quote_input(value)} is the release repository itself, not a mirror"


def config_promotion_mirror_unknown(name: str, known: Sequence[str]) -> str:
    return (
        f"{quote_input(name)} is not a configured mirror; promotion copies to mirrors named "
        f"in [mirrors] ({name_list(known)})"
    )


def config_image_too_long(image: str, limit: int) -> str:
    return f"the image name {quote_input(image)} is longer than {limit} characters"


def config_bad_slack_user(value: str) -> str:
    return (
        f"{quote_input(value)} is not a Slack user id; expected an id such as U012AB3CD or "
        "W012AB3CD (the member id from the user's profile, not a name or <@mention>)"
    )


def config_bad_slack_group(value: str) -> str:
    return f"{quote_input(value)} is not a Slack user group id; expected an id such as S012AB3CD"


def config_bad_slack_principal(value: str) -> str:
    return (
        f"{quote_input(value)} is not a Slack user id or user group id; expected an id such "
        "as U012AB3CD, W012AB3CD (a member) or S012AB3CD (a user group)"
    )


def config_bad_slack_channel(value: str) -> str:
    return (
        f"{quote_input(value)} is not a Slack channel id; expected an id such as C012AB3CD "
        "(from the channel's details, not its #name)"
    )


def config_approvals_unreachable(required: int, approvers: int) -> str:
    return (
        f"{required} approvals are required but only {approvers} approvers are listed and "
        "no approver group is given, so no release could ever be approved"
    )


def config_template_unknown_placeholder(template: str, name: str, allowed: Sequence[str]) -> str:
    placeholders = name_list(["{" + a + "}" for a in allowed])
    return (
        f"{quote_input(template)} uses the unknown placeholder {quote_input('{' + name + '}')}; "
        f"the placeholders allowed here are: {placeholders}"
    )


def config_template_stray_brace(template: str) -> str:
    return f"{quote_input(template)} has a '{{' or '}}' that is not part of a placeholder"


def config_template_needs(template: str, needed: Sequence[str]) -> str:
    options = " or ".join("{" + n + "}" for n in needed)
    return f"{quote_input(template)} must contain {options}"


def config_template_bad_tag(template: str, rendered: str) -> str:
    return (
        f"{quote_input(template)} makes the tag {quote_input(rendered)}, which is not a valid "
        "tag (letters, digits, '_', '.' and '-', at most 128, not starting with '.' or '-')"
    )


def config_template_is_release_tag(template: str, tag: str) -> str:
    return (
        f"{quote_input(template)} makes the tag {quote_input(tag)}, which is a release tag; "
        "only the merge step of that release writes it"
    )


def config_template_collides(template: str, first: str, second: str, tag: str) -> str:
    return f"{quote_input(template)} gives {first} and {second} the same tag {quote_input(tag)}"


def config_bad_ref(template: str, rendered: str) -> str:
    return (
        f"{quote_input(template)} makes the git ref {quote_input(rendered)}, which is not a "
        "valid ref (letters, digits, '.', '_', '-' and '/', no '..', not starting with "
        "'-', '.' or '/')"
    )


def config_source_kind(keys: Sequence[str]) -> str:
    return (
        f"give exactly one of {' or '.join(keys)}: git for a repository checked out at the "
        "release's ref, path for a directory used as it is"
    )


def config_bad_git_url(value: str) -> str:
    return (
        f"{quote_input(value)} is not a git repository location; expected an https://, "
        "http://, ssh://, git:// or file:// URL, user@host:path, or a local path"
    )


def config_git_url_password(value: str) -> str:
    return (
        f"{quote_input(value)} has a password in it; registry and git credentials come "
        "from the environment and the standard credential helpers, never the config file"
    )


def config_bad_key_prefix(value: str) -> str:
    return (
        f"{quote_input(value)} is not a valid key prefix; expected letters, digits, '_', "
        "'-', '.' and ':', starting with a letter or digit, at most 64 characters"
    )


def config_renew_too_long(renew: float, lease: int) -> str:
    return f"{renew} is more than half of lease_seconds ({lease}); a renewal must fit twice"


def config_cap_below_base(cap: float, base: float) -> str:
    return f"{cap} is below backoff_base_seconds ({base})"


def config_seconds_out_of_range(value: object, high: object) -> str:
    return f"{value} is out of range; expected more than 0 seconds and at most {high}"


def config_retention_out_of_range(value: object, high: int) -> str:
    return (
        f"{value} is not a retention: give a number of days above 0 and at most {high} "
        "(a fraction is allowed, such as 0.5)"
    )


# ---- the release pipeline (jobs/usecases/pipeline.py, jobs/runtime/worker.py) -------------


def platform_not_configured(platform: str, configured: Sequence[Platform]) -> str:
    names = ", ".join(str(p) for p in configured)
    return f"{platform} is not a configured platform; expected one of {names}"


def built_with(component: str, lead: str) -> str:
    """A component whose build is another's (identical build inputs): the live message's
    line, e.g. "runtime: built with metadata-service"."""
    return f"{component}: built with {lead}"


def build_drift(
    component: str,
    planned: str,
    here: str,
    *,
    dockerfile: str,
    context: str,
    build_args: Sequence[str],
    target: str | None,
) -> str:
    """A worker refuses a build job its own config would build otherwise than the bot
    planned. What the worker would build is named (build argument names, not values: a
    value may be a secret); the bot's inputs are not in the job, only its id."""
    inputs = [f"Dockerfile {dockerfile}", f"context {context}"]
    inputs.append("build args " + (", ".join(build_args) if build_args else "none"))
    if target:
        inputs.append(f"target {target}")
    return (
        f"this worker's configuration builds {component} differently from the bot's"
        f" ({'; '.join(inputs)}): the bot planned build {planned}, this worker would"
        f" build {here}; give the workers the bot's configuration"
    )


def build_failed(component: str, version: str, platform: str, error: str) -> str:
    reason = error.strip().splitlines()[-1] if error.strip() else "no reason was recorded"
    return f"{component} {version} failed to build for {platform}: {reason}"


def verdict_not_ok(component: str, version: str, verdict: str) -> str:
    return f"{component} {version}: the published index failed the platform check ({verdict})"


def retry_started(version: str, rebuilds: int, run_id: str) -> str:
    """What a retry does: the builds it runs again (a build two components share counts
    once), or, with none failed, the merge it redoes from the builds it reuses."""
    if rebuilds == 0:
        return f"{version}: merging again from the same builds in run {run_id[:8]}"
    plural = "" if rebuilds == 1 else "s"
    return f"{version}: rebuilding {rebuilds} failed build{plural} in run {run_id[:8]}"


def release_not_found(version: str) -> str:
    return f"there is no release {version}; start one with: release {version}"


def nothing_to_retry(version: str, state: str) -> str:
    """A retry of a release that is not blocked or failed (still running, ready, ...)."""
    return (
        f"{version} is {state}; retry restarts failed builds and merges of a blocked or "
        "failed release only"
    )


def nothing_failed_to_retry(version: str, state: str) -> str:
    """A retry of a blocked or failed release none of whose builds or merges failed."""
    return f"{version} is {state}, but none of its builds or merges failed: nothing to retry"


def merge_gave_up(component: str, version: str, detail: str, seconds: float) -> str:
    """A merge that met registry faults for its whole retry budget. `detail` is kept to one
    clause: reasons are joined with "; "."""
    clause = " ".join(detail.replace(";", ",").split())[:300]
    return (
        f"{component} {version} was not merged: the registry kept failing for {seconds:.0f} s "
        f"({clause}); retry the release once the registry is healthy (nothing is rebuilt)"
    )


def already_published(component: str, version: str, digest: str) -> str:
    """A release tag written before the cancel: it stays (a cancel does not unpublish)."""
    return f"{component} {version} was already published: {digest}"


def cannot_cancel(version: str, state: str) -> str:
    return f"{version} is {state} and cannot be cancelled"


def builder_refused(detail: str) -> str:
    return f"the worker cannot start: {detail}"


def builder_of_another_context(builder: str, current: str) -> str:
    return (
        f"the Buildx builder {builder} is the docker driver of the Docker context {builder}, "
        f"and Buildx builds with that driver only in the current context ({current}); "
        f"point the worker at that daemon with DOCKER_CONTEXT={builder} or DOCKER_HOST "
        "instead of --builder"
    )


def pushed_platform_wrong(image: str, platform: str, detail: str) -> str:
    return f"{image} was pushed for {platform} but the registry disagrees: {detail}"


# ---- mirror sync and drift (jobs/usecases/sync.py; the terminal prints these too) ---------


# The renderers take the report data (`jobs.domain.copy_plan.SyncData`, `DriftData`): the same
# values the Slack renderer reads.
def human_bytes(count: int) -> str:
    value = float(count)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"  # pragma: no cover


def sync_subject(component: str, version: str) -> str:
    return f"{component} {version}"


def sync_gate_refused(version: str) -> str:
    return (
        f"nothing was copied for {version}: the release does not pass the platform check "
        "at the source"
    )


def sync_source_moved(subject: str, approved: str, actual: str) -> str:
    return (
        f"{subject} has moved since it was approved: the tag now holds {short_digest(actual)}, "
        f"but {short_digest(approved)} was approved"
    )


def sync_overwrite_refused(destination: str, held: str, source: str) -> str:
    return (
        f"{destination} already holds {short_digest(held)}, not the source's "
        f"{short_digest(source)}; it was not overwritten (an approver must confirm an "
        "overwrite explicitly)"
    )


def sync_tag_appeared(destination: str, held: str) -> str:
    return (
        f"{destination} was written by someone else during the copy (it now holds "
        f"{short_digest(held)}); it was not overwritten"
    )


def sync_verify_digest(destination: str, got: str, expected: str) -> str:
    return (
        f"{destination} reads back as {short_digest(got)}, not the source's "
        f"{short_digest(expected)}"
    )


def sync_verify_verdict(destination: str, problems: Sequence[str]) -> str:
    return f"{destination} was copied but does not pass the platform check: " + "; ".join(problems)


def sync_nothing_to_sync() -> str:
    return "no mirror given; name a configured mirror or a location HOST[:PORT][/NAMESPACE]"


SYNC_STATUS_WORDS = {
    "copied": "copied",
    "up-to-date": "up to date",
    "refused": "REFUSED",
    "failed": "FAILED",
    "unverified": "UNVERIFIED",
}


def _count_bytes(count: int, size: int) -> str:
    return f"{count} ({human_bytes(size)})" if count else "0"


def sync_report_text(data: SyncData) -> str:
    """The plain-text report of a sync: one table per mirror, one row per component."""
    version = data["version"]
    if not data["gate_passed"]:
        lines = [sync_gate_refused(version)]
        for problem in data["gate"]:
            lines.extend(f"  - {sentence}" for sentence in problem["sentences"])
        return "\n".join(lines)
    blocks = []
    for mirror in data["mirrors"]:
        components = mirror["components"]
        good = sum(1 for c in components if c["status"] in ("copied", "up-to-date"))
        head = (
            f"{version} -> {mirror['mirror']} ({mirror['location']}): {good} of "
            f"{len(components)} components in sync and verified, {mirror['seconds']:.1f} s"
        )
        rows = [("COMPONENT", "STATUS", "COPIED", "MOUNTED", "SKIPPED", "TIME", "DIGEST")]
        for c in components:
            blobs = c["blobs"]
            counted = c["status"] not in ("up-to-date", "refused") or blobs["skipped"] > 0
            rows.append(
                (
                    c["component"],
                    SYNC_STATUS_WORDS.get(c["status"], c["status"]),
                    _count_bytes(blobs["copied"], blobs["copied_bytes"]) if counted else "-",
                    _count_bytes(blobs["mounted"], blobs["mounted_bytes"]) if counted else "-",
                    _count_bytes(blobs["skipped"], blobs["skipped_bytes"]) if counted else "-",
                    f"{c['seconds']:.1f} s",
                    short_digest(c["final_digest"]),
                )
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        lines = [head]
        for row in rows:
            lines.append(
                "  "
                + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            )
        for c in components:
            if c["reason"]:
                lines.append(f"  - {c['component']}: {c['reason']}")
            left_out = c["blobs"].get("external", 0)
            if left_out:
                sentence = sync_layers_left_out(left_out, c["blobs"].get("external_bytes", 0))
                lines.append(f"  - {c['component']}: {sentence}")
        blocks.append("\n".join(lines))
    total = data["blobs"]
    blocks.append(
        f"copied {_count_bytes(total['copied'], total['copied_bytes'])} blobs, mounted "
        f"{_count_bytes(total['mounted'], total['mounted_bytes'])}, skipped "
        f"{_count_bytes(total['skipped'], total['skipped_bytes'])} in {data['seconds']:.1f} s"
    )
    return "\n\n".join(blocks)


def sync_layers_left_out(count: int, size: int) -> str:
    """Layers a copy did not take because they name their own download URLs (foreign
    layers: skopeo and regclient leave them too). Shown per component in the CLI report
    and in the Slack sync message."""
    if count == 1:
        return (
            f"1 layer ({human_bytes(size)}) not copied: it names its own download URLs "
            "(a foreign layer), so the mirror does not hold it and pulls fetch it from there"
        )
    return (
        f"{count} layers ({human_bytes(size)}) not copied: they name their own download URLs "
        "(foreign layers), so the mirror does not hold them and pulls fetch them from there"
    )


def sync_progress_line(
    done_bytes: int,
    total_bytes: int,
    finished: int,
    components: int,
    width: int = 30,
) -> str:
    """`[##########....................]  33%  100.0 MB of 300.0 MB  2/10 copies done`."""
    fraction = 1.0 if total_bytes <= 0 else min(1.0, max(0.0, done_bytes / total_bytes))
    filled = int(fraction * width)
    bar = "#" * filled + "." * (width - filled)
    return (
        f"[{bar}] {fraction * 100:3.0f}%  {human_bytes(max(0, done_bytes))} of "
        f"{human_bytes(total_bytes)}  {finished}/{components} copies done"
    )


def sync_progress_plain(mirror: str, component: str, status: str, detail: str) -> str:
    return f"{mirror} {component}: {SYNC_STATUS_WORDS.get(status, status)}{detail}"


_DRIFT_WORDS = {
    "same": "same",
    "different": "DIFFERENT",
    "missing": "MISSING",
    "unreadable": "UNREADABLE",
}


def drift_text(data: DriftData) -> str:
    """The drift view: per component, the digest at the source and at every mirror."""
    mirrors = data["mirrors"]
    header = ("COMPONENT", "SOURCE", *mirrors)
    rows: list[tuple[str, ...]] = [header]
    notes = []
    for row in data["rows"]:
        source = short_digest(row["source_digest"]) if row["source_error"] is None else "UNREADABLE"
        cells = []
        for cell in row["mirrors"]:
            word = _DRIFT_WORDS.get(cell["status"], cell["status"])
            cells.append(
                short_digest(cell["digest"])
                if cell["status"] == "same"
                else f"{word} {short_digest(cell['digest'])}".rstrip(" -")
            )
            if cell["error"]:
                notes.append(f"  - {row['component']} at {cell['mirror']}: {cell['error']}")
        if row["source_error"]:
            notes.append(f"  - {row['component']} at the source: {row['source_error']}")
        rows.append((row["component"], source, *cells))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = [
        f"{data['version']}: "
        + (
            "mirrors differ from the source"
            if data["drifted"]
            else "every mirror equals the source"
        )
    ]
    for r in rows:
        lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    lines.extend(notes)
    return "\n".join(lines)


# ---- permissions, approvals, promotion, the registry (jobs/domain, jobs/registry) ---------


def permission_wrong_channel(channel: str, accepted: Sequence[str]) -> str:
    if not accepted:
        return (
            "this bot takes no commands in any channel yet: its config lists no "
            "`permissions.channels`; ask the bot's operator"
        )
    names = ", ".join(f"<#{c}>" for c in accepted)
    return f"this channel does not take release commands; use {names}"


def permission_refused(user: str, action: str, who: str) -> str:
    return (
        f"<@{user}> may not {action.replace('_', ' ')} here; "
        f"the config's permissions grant it to: {who}"
    )


def approval_superseded(version: str) -> str:
    return (
        f"these buttons belong to an earlier run of {version}; use the buttons of its latest "
        "message"
    )


def approval_not_ready(version: str, state: str) -> str:
    return f"{version} is {state}; only a ready release can be approved"


def rejection_not_open(version: str, state: str) -> str:
    return f"{version} is {state}; only a ready or approved release can be rejected"


def approval_not_approver(user: str) -> str:
    return f"<@{user}> is not an approver of this project (by user id or user group)"


def approval_self(user: str, version: str) -> str:
    return f"<@{user}> requested {version} and may not approve it (self-approval is off)"


def approval_already(user: str) -> str:
    return f"<@{user}> has already approved this run; it counts once"


def approval_renewed(user: str) -> str:
    return f"the earlier approval of <@{user}> had expired; this one counts"


def approval_tally(count: int, required: int, users: Sequence[str]) -> str:
    names = ", ".join(f"<@{u}>" for u in users)
    tail = f": {names}" if users else ""
    return f"{count} of {required} approvals{tail}"


def approval_drift(subject: str, verified: str, actual: str | None) -> str:
    if actual is None:
        return f"{subject} no longer exists in the registry, so it cannot be approved"
    return (
        f"{subject} has moved since it was verified: the tag now holds {short_digest(actual)}, "
        f"but {short_digest(verified)} was verified"
    )


def promotion_failed(target: str, detail: str) -> str:
    return f"{target} could not be written: {detail}"


def promotion_gate_failed(version: str, sentences: Sequence[str]) -> str:
    return f"{version} was not copied to the promotion mirrors: " + "; ".join(sentences)


def overwrite_nothing_pending(version: str) -> str:
    return f"{version} has no mirror tag waiting for an overwrite confirmation"


def promotion_none(version: str) -> str:
    return f"{version} has no promotion tags to write (a prerelease, or none configured)"


def approval_check_failed(subject: str) -> str:
    return f"{subject} no longer passes the platform check"


def _seconds(seconds: float | None) -> str:
    return "its time limit" if seconds is None else f"{seconds:g} s"


def _tries(attempts: int) -> str:
    return "" if attempts <= 1 else f" ({attempts} attempts)"


def registry_transport_fault(
    kind: str, host: str, detail: str, seconds: float | None, attempts: int
) -> str:
    """One sentence per transport failure, naming the host; `detail` is the HTTP
    library's own words (never bytes the server sent)."""
    if kind == "refused":
        return f"cannot reach {host}: the connection was refused{_tries(attempts)}"
    if kind == "dns":
        return f"cannot reach {host}: the name does not resolve ({detail})"
    if kind == "tls":
        return f"cannot reach {host}: the TLS handshake failed ({detail})"
    if kind == "connect-timeout":
        return f"cannot reach {host}: no connection within {_seconds(seconds)}{_tries(attempts)}"
    if kind == "head-timeout":
        return (
            f"{host} accepted the connection but sent no complete response head within "
            f"{_seconds(seconds)}{_tries(attempts)}"
        )
    if kind == "idle-timeout":
        return (
            f"{host} stopped sending in the middle of a response for "
            f"{_seconds(seconds)}{_tries(attempts)}"
        )
    if kind == "malformed":
        return f"{host} sent a malformed HTTP response ({detail})"
    if kind == "cut-short":
        return (
            f"{host} closed the connection before the response body ended "
            f"({detail}){_tries(attempts)}"
        )
    if kind == "closed":
        return f"{host} closed the connection without answering{_tries(attempts)}"
    if kind == "budget":
        return (
            f"gave up on {host} after {_seconds(seconds)}, the time allowed for one "
            "reference (registry.budget_seconds in the configuration)"
        )
    return f"cannot reach {host} ({detail or 'network error'}){_tries(attempts)}"


def registry_unreachable(said: str, via_proxy: str | None = None) -> str:
    """`said` (a `registry_transport_fault` sentence), and `registry_via_proxy(...)` when
    the request went through a proxy (never the proxy's credentials)."""
    return f"{said}; {via_proxy}" if via_proxy else said


def _status_said(status: int, code: str | None) -> str:
    """`HTTP 404` or `HTTP 404, MANIFEST_UNKNOWN`: what a registry's refusal may show."""
    return f"HTTP {status}, {code}" if code else f"HTTP {status}"


def registry_not_found(status: int, code: str | None) -> str:
    return f"not found in the registry ({_status_said(status, code)})"


def registry_refused_credentials(status: int, code: str | None) -> str:
    return f"the registry refused the credentials ({_status_said(status, code)})"


def registry_needs_credentials(status: int, code: str | None) -> str:
    return (
        "the registry requires authentication and no credentials were found in the "
        f"docker config ({_status_said(status, code)})"
    )


def registry_kept_failing(status: int, code: str | None, attempts: int) -> str:
    return f"the registry kept answering {_status_said(status, code)} after {attempts} attempts"


def registry_unexpected_status(status: int, code: str | None) -> str:
    return f"unexpected answer from the registry ({_status_said(status, code)})"


def registry_token_realm_insecure() -> str:
    return (
        "the registry sends its clients to a token service over plain HTTP on another "
        "host; credentials are sent there only over HTTPS (or to a host given as an "
        "insecure registry)"
    )


def registry_certificate_untrusted(host: str, reason: str) -> str:
    return (
        f"the TLS certificate of {host} is not trusted here ({reason}); add the registry's "
        "CA to the system's CA bundle, or point SSL_CERT_FILE at a bundle that has it"
    )


# ---- the sync gate and sync jobs (jobs/domain/sync_gate.py, jobs/usecases/sync_job.py) ---


def sync_mirror_names_only(text: str, known: Sequence[str]) -> str:
    names = name_list(known) if known else "none are configured"
    return (
        f"{quote_input(text)} is not a configured mirror; from Slack a release is synced only "
        f"to a mirror the config names: {names}. Nothing was contacted (the command line, "
        "`aibrix-bot sync VERSION --to HOST/NAMESPACE`, takes a location, with the operator's "
        "own credentials)"
    )


def sync_refused_unknown(version: str) -> str:
    return (
        f"{version} has no release to sync; release it, have it approved, and sync it once "
        "it is promoted"
    )


def sync_refused_not_approved(version: str, approvers: str) -> str:
    return (
        f"{version} is ready but not approved; from Slack only a promoted release is synced "
        f"to a mirror. An approver ({approvers}) may approve it, or sync it before approval "
        f"with `/aibrix sync {version} MIRROR --ready`"
    )


def sync_refused_ready_needs_approver(user: str, version: str, approvers: str) -> str:
    return (
        f"<@{user}> may not sync {version} before it is approved; only an approver "
        f"({approvers}) may, or anyone with the sync role once it is promoted"
    )


def sync_refused_settled(version: str, state: str, reason: str) -> str:
    why = f" ({reason})" if reason else ""
    return (
        f"{version} is {state}{why}: it was never promoted, so nobody may sync it to a "
        "mirror; cut a new release"
    )


def sync_refused_not_yet(version: str, state: str) -> str:
    return (
        f"{version} is {state}; it can be synced once it is promoted (anyone with the sync "
        f"role), or once it is ready by an approver with `/aibrix sync {version} MIRROR --ready`"
    )


def sync_refused_no_digests(version: str) -> str:
    return f"{version} has no verified digest of every component; nothing can be synced"


def sync_refused_moved(version: str, sentences: Sequence[str]) -> str:
    return f"{version} was not synced: " + "; ".join(sentences)


def sync_failed_unexpectedly(error: str) -> str:
    return f"the sync stopped: {error}; ask again to resume (what is on the mirror is kept)"


# ---- released versions are immutable (issue 10 item 2) -----------------------------------


def _when(at: float) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(at, datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _who(users: Sequence[str]) -> str:
    return ", ".join(u if u.startswith("cli:") else f"<@{u}>" for u in users) or "nobody"


def release_immutable(
    version: str, promoted_by: Sequence[str], promoted_at: float, digests: Sequence[tuple[str, str]]
) -> str:
    held = "; ".join(f"{component} {digest}" for component, digest in digests)
    return (
        f"{version} was promoted by {_who(promoted_by)} on {_when(promoted_at)} and is "
        f"immutable: its tags hold {held}. Cut a new version instead (an approver may "
        "`release VERSION --supersede` in an emergency)"
    )


def tag_kept(subject: str, digest: str) -> str:
    return f"{subject} already holds {digest}, verified by an earlier run; it is kept as it is"


def tag_changed_by_someone_else(subject: str, held: str, wrote: str | None) -> str:
    if wrote is None:
        return (
            f"{subject} holds {held}, which no run of this version wrote; it is not "
            "overwritten (someone else wrote it)"
        )
    return (
        f"{subject} holds {held}, but this version's runs last wrote {wrote}; it is not "
        "overwritten (someone else changed it)"
    )


def tag_removed(subject: str, wrote: str) -> str:
    return (
        f"{subject} no longer exists, but {wrote} was written and verified there; it is not "
        "written again (someone removed it)"
    )


# ---- versioned layouts, the plan and the preflight ----------------------------------------


def range_bad_bound(text: str, bound: str, operators: Sequence[str]) -> str:
    return (
        f"{quote_input(text)} is not a version range: {quote_input(bound)} does not start "
        f"with one of {' '.join(operators)}; expected bounds joined by commas, such as "
        "'>=v0.5.0' or '>=v0.2.0, <v0.5.0'"
    )


def config_bad_range(detail: str) -> str:
    return detail


def config_layout_needs_change() -> str:
    return "a layout must name a dockerfile, a context, a target or build_args for its versions"


def config_bad_extends(value: str, known: Sequence[str]) -> str:
    return (
        f"{quote_input(value)} is not a built-in configuration to extend; "
        f"the ones that exist are: {name_list(known)}"
    )


def config_bad_policy(value: str, allowed: Sequence[str]) -> str:
    return f"{quote_input(value)} is not a policy; expected one of {name_list(allowed)}"


def component_not_in_version(name: str, version: str, versions: str, present: Sequence[str]) -> str:
    return (
        f"{name} is not part of {version} (it is released for {versions}); the components "
        f"of {version} are: {name_list(present)}"
    )


def no_components_in_version(version: str) -> str:
    return f"no configured component is released for {version}"


def plan_path_missing(component: str, what: str, path: str, version: str, revision: str) -> str:
    """`runtime: the Dockerfile build/container/Dockerfile.runtime does not exist in v0.7.0
    at revision 1a2b3c4d5e6f`."""
    return f"{component}: the {what} {path} does not exist in {version} at revision {revision[:12]}"


def preflight_new_tag(image: str, found: str, expected: str) -> str:
    return f"{image} has newTag {found}; a release of {expected} must ship newTag {expected}"


def preflight_new_tag_missing(image: str, expected: str) -> str:
    return f"{image} has no newTag; a release of {expected} must ship newTag {expected}"


def preflight_app_version(found: str, version: str, expected: str) -> str:
    return f"appVersion is {found}; a release of {version} must ship appVersion {expected}"


def preflight_app_version_missing(version: str, expected: str) -> str:
    return f"there is no appVersion; a release of {version} must ship appVersion {expected}"


def preflight_not_yaml(detail: str) -> str:
    return f"is not valid YAML: {detail}"


def preflight_not_mapping(what: str) -> str:
    return f"{what} is not a mapping, so the versions it ships cannot be read"


def problem_line(file: str, line: int, message: str) -> str:
    """`config/overlays/release/kustomization.yaml:12: aibrix/runtime has newTag v0.6.0; ...`."""
    return (
        f"{file}:{line}: {message}"
        if file and line
        else (f"{file}: {message}" if file else message)
    )


def release_refused_by_plan(version: str, revision: str, problems: Sequence[str]) -> str:
    return (
        f"{version} is not queued: the source at revision {revision[:12]} has "
        f"{'a problem' if len(problems) == 1 else f'{len(problems)} problems'}, nothing was "
        f"built: {'; '.join(problems)}"
    )


def release_shown_problems(version: str, problems: Sequence[str]) -> str:
    return (
        f"{version} is a prerelease, so it goes ahead, but its manifests disagree with it: "
        f"{'; '.join(problems)}"
    )


def dependency_line(reference: str, verdict: str, missing: Sequence[str], error: str | None) -> str:
    if error:
        return f"{reference}: {verdict}: {error}"
    if missing:
        return f"{reference}: {verdict}: missing {', '.join(missing)}"
    return f"{reference}: {verdict}"


def dependency_blocks(reference: str, verdict: str, missing: Sequence[str]) -> str:
    if missing:
        return (
            f"dependency {reference} is missing {', '.join(missing)}: the release deploys it, "
            "so it cannot be promoted until the image has every required platform"
        )
    return (
        f"dependency {reference} is {verdict}: the release deploys it, so it cannot be "
        "promoted until the image is right for every required platform"
    )


# ---- proxies ------------------------------------------------------------------------------
# A proxy variable's value may hold a password: these sentences name the variable and,
# at most, the proxy's scheme, host and port as `jobs.registry.proxies.Proxy.shown` gives them.


def proxy_variable_invalid(variable: str, problem: str) -> str:
    return (
        f"{variable} is not a proxy this bot can use: {problem} "
        "(expected http://[USER:PASSWORD@]HOST[:PORT] or https://...)"
    )


def proxy_scheme_unsupported(scheme: str | None) -> str:
    if scheme:
        return f"its scheme {scheme}:// is not supported (only http:// and https:// proxies are)"
    return "its scheme is not supported (only http:// and https:// proxies are)"


def proxy_url_malformed() -> str:
    return "it is not a well-formed URL"


def proxy_url_has_path() -> str:
    return "it has a path, query or fragment after the host"


def proxy_url_no_host() -> str:
    return "it names no host"


def proxy_url_bad_port() -> str:
    return "its port is not a number from 1 to 65535"


def proxy_named(proxy: str, variable: str) -> str:
    """A proxy as a sentence names it: `proxy` is its scheme, host and port (never its
    credentials), `variable` the one that set it."""
    return f"the proxy {proxy} (from {variable})"


def proxy_refused_tunnel(proxy: str, variable: str, host: str, status: int, attempts: int) -> str:
    """The proxy answered `CONNECT host` with an error status: only its number is shown
    (the reason phrase is the proxy's own text)."""
    return (
        f"{proxy_named(proxy, variable)} did not open a tunnel to {host} "
        f"(HTTP {status} to CONNECT){_tries(attempts)}"
    )


def registry_via_proxy(proxy: str, variable: str) -> str:
    """Appended to a transport failure of a request sent through a proxy."""
    return f"sent through {proxy_named(proxy, variable)}"


# ---- a component's card (jobs/domain/component_card.py; Slack and the terminal) -------


def card_tag_missing(tag: str, platforms: Sequence[str], where: str) -> str:
    return f"{tag} is missing {_and(platforms)} on {where}"


def card_tag_mismatched(tag: str, platforms: Sequence[str], where: str) -> str:
    return f"{tag} on {where} has entries that are not the platform they claim: {_and(platforms)}"


def card_lacks(where: str, tag: str) -> str:
    return f"{where} lacks {tag}"


def card_drift(where: str, tag: str, held: str, expected: str, recorded: bool) -> str:
    whose = "the release's" if recorded else "the source's"
    return f"{where} holds {short_digest(held)} under {tag}, not {whose} {short_digest(expected)}"


def card_cell_unreadable(where: str, tag: str, error: str) -> str:
    return f"{tag} on {where} cannot be read: {error}"


def card_registry_unreadable(where: str, error: str) -> str:
    return f"{where} cannot be read: {error}"


def card_tag_list_unreadable(image: str, error: str) -> str:
    return (
        f"the tag list of {image} cannot be read ({error}); tags the bot has no record of "
        "are not shown"
    )


def card_read_timeout(seconds: float) -> str:
    return f"no answer within {seconds:g} s"


def card_all_good(component: str, tags: int, registries: int) -> str:
    return (
        f"{component}: all {tags} tags carry every required platform, the same digest "
        f"on all {registries} registries"
    )


def card_no_tags(component: str) -> str:
    return (
        f"{component}: no release of it on record and no release tag in its repository; "
        "nothing to show"
    )


def card_headline(problems: Sequence[str]) -> str:
    if len(problems) == 1:
        return problems[0]
    return f"{problems[0]} (and {len(problems) - 1} more)"


CARD_ROLE_WORDS = {
    "promoted": "latest promoted",
    "in-progress": "latest in progress",
    "promotion-tag": "promotion tag",
    "registry": "in the registry",
}


def card_role(role: str, state: str | None, recorded: bool) -> str:
    word = CARD_ROLE_WORDS.get(role, role)
    if role == "in-progress" and state:
        return f"{word}: {state}"
    if role == "registry" and not recorded:
        return f"{word}, no record"
    return word


def _and(items: Sequence[str]) -> str:
    items = list(items)
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


# ---- the fleet of workers (jobs/domain/fleet.py) -----------------------------------------


def duration_words(seconds: float) -> str:
    """A span for humans: `45 s`, `10 min`, `3 h`, `2 days` (rounded down)."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 2 * 3600:
        return f"{seconds // 60} min"
    if seconds < 2 * 86400:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} days"


def no_live_worker(platform: str, seen_seconds_ago: float | None) -> str:
    """Why a release waits: nothing is there to build its platform."""
    if seen_seconds_ago is None:
        return f"no {platform} worker has ever been seen: its builds wait until one starts"
    return (
        f"no {platform} worker has been seen for {duration_words(seen_seconds_ago)}: "
        "its builds wait until one starts"
    )


def no_workers() -> str:
    return "no worker is alive"
