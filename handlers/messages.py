"""The Slack adapter's sentences: usage, parse refusals, command and button replies,
the sync command's answers and the live message's lines.

The core's sentences (versions, approvals, the registry, ...) are in
`jobs.domain.messages`; only wording that exists because of Slack lives here. Functions
take values, never credentials.
"""

from __future__ import annotations

from collections.abc import Sequence

from jobs.domain.inspect_scope import Location, LocationKind
from jobs.domain.messages import (
    SYNC_STATUS_WORDS,
    char_name,
    human_bytes,
    name_list,
    quote_input,
    short_digest,
)

# ---- commands and buttons (handlers/, handlers/blocks.py) ---------------------------------


SLACK_USAGE = {
    "release": "/aibrix release VERSION [COMPONENT...] [--supersede]",
    "inspect": "/aibrix inspect COMPONENT [TAG]  or  /aibrix inspect IMAGE[:TAG]",
    "plan": "/aibrix plan VERSION [COMPONENT...]",
    "status": "/aibrix status [VERSION | COMPONENT]",
    "sync": "/aibrix sync VERSION MIRROR [--ready]",
    "cancel": "/aibrix cancel VERSION",
    "retry": "/aibrix retry VERSION",
    "nightly": "/aibrix nightly [BRANCH]",
    "workers": "/aibrix workers",
    "help": "/aibrix help",
}


def slack_usage(subcommand: str) -> str:
    return f"usage: {SLACK_USAGE[subcommand]}"


def slack_help() -> str:
    lines = [
        "*/aibrix* cuts multi-architecture releases and refuses to promote an image that "
        "lacks a required platform."
    ]
    lines.extend(f"`{usage}`" for usage in SLACK_USAGE.values())
    return "\n".join(lines)


def slack_text_too_long(length: int, limit: int) -> str:
    return (
        f"the command text is {length} characters long; at most {limit} are accepted. "
        "Type /aibrix help for the commands"
    )


def slack_bad_character(char: str) -> str:
    return (
        f"the command text contains {char_name(char)}; only ASCII letters, digits, spaces "
        "and '.', '-', '_', '/', ':', '@' are accepted (no shell or quoting characters)"
    )


def slack_unknown_subcommand(word: str) -> str:
    return (
        f"{quote_input(word)} is not an /aibrix command; the commands are: "
        f"{name_list(list(SLACK_USAGE))}"
    )


def slack_wrong_arguments(subcommand: str, given: int) -> str:
    return f"{subcommand} does not take {given} arguments; {slack_usage(subcommand)}"


def card_title(component: str) -> str:
    return f"{component}: versions, registries and mirrors"


def card_hint(components: Sequence[str]) -> str:
    """The release message's pointer to each component's card (a slash command, which
    Slack has no link for: the user types or copies it)."""
    return "Each component's card: " + " · ".join(f"`/aibrix inspect {c}`" for c in components)


def card_tag_mirrors(tag: str) -> str:
    return f"*{tag}* on every registry and mirror"


def slack_tag_twice(image: str) -> str:
    return f"{quote_input(image)} already has a tag or digest; give TAG only with a bare image"


def slack_bad_button(detail: str) -> str:
    return f"this button does not carry a release this bot made ({detail}); nothing was done"


def slack_unknown_action(action_id: str) -> str:
    return f"the button {quote_input(action_id, 60)} is not one this bot made; nothing was done"


def slack_release_started(version: str, run_id: str) -> str:
    return f"{version}: started run {run_id[:8]}; progress is in the channel message"


def slack_release_running(version: str, run_id: str, state: str) -> str:
    return f"{version} is already running as run {run_id[:8]} ({state}); no second run was started"


def slack_nightly_started(branch: str, revision: str, run_id: str) -> str:
    return (
        f"nightly of {branch} at {revision}: started run {run_id[:8]}; `nightly` moves "
        "only when every platform passes the gate; progress is in the channel message"
    )


def slack_working(what: str) -> str:
    return f"working on {what}..."


def _location_label(location: Location) -> str:
    if location.kind is LocationKind.MIRROR:
        return f"{location.text} (mirror {location.name})"
    if location.kind is LocationKind.DEPENDENCY:
        return f"{location.text} (a dependency image)"
    return f"{location.text} (the release repository)"


def inspect_not_configured(reference: str, locations: Sequence[Location]) -> str:
    """From Slack, only images on the registries the config names are read."""
    places = ", ".join(_location_label(location) for location in locations)
    return (
        f"{reference} is not on a registry this project uses, so the bot does not read "
        f"it; from Slack, /aibrix inspect reads only images under {places}. Name a "
        "component (/aibrix inspect runtime v0.3.0), or run aibrix-bot inspect with "
        "your own credentials for any other image"
    )


def slack_bad_identity(what: str, example: str) -> str:
    return f"this request does not carry a valid Slack {what} (such as {example}); nothing was done"


def click_bad_origin(detail: str) -> str:
    return f"this click does not say which message it came from ({detail}); nothing was done"


def click_not_on_status_message(version: str) -> str:
    return (
        f"this button is not on the status message of {version} (a copy, or a message in "
        "another channel); use the buttons of that message; nothing was done"
    )


def slack_cancelled(version: str, actor: str) -> str:
    return f"{version} was cancelled by <@{actor}>"


def slack_no_releases() -> str:
    return "there are no releases yet; start one with /aibrix release VERSION"


def slack_workers_title(count: int) -> str:
    return f"{count} live worker{'' if count == 1 else 's'}"


def slack_fleet_unreadable() -> str:
    return "the list of workers cannot be read right now (Redis did not answer); try again"


def slack_internal_error(what: str) -> str:
    return f"{what} failed on the bot's side; nothing more was done. The bot's log has the details"


def approval_expired(users: Sequence[str], ttl_seconds: int) -> str:
    names = ", ".join(f"<@{u}>" for u in users)
    return f"the approval of {names} expired (older than {ttl_seconds} s) and does not count"


def approval_refused_drift(version: str) -> str:
    return f"approval of {version} refused: a release tag changed after verification"


def rejected_by(user: str) -> str:
    return f"rejected by <@{user}>"


def promotion_queued(version: str) -> str:
    return f"{version} is approved; promotion is queued"


def promotion_written(target: str, digest: str) -> str:
    return f"{target} now points at {short_digest(digest)}"


def promotion_overwrite_pending(target: str, held: str) -> str:
    return (
        f"{target} already holds {short_digest(held)}, not this release: it is not "
        "overwritten unless an approver confirms (Confirm overwrite)"
    )


def overwrite_confirmed(user: str, targets: Sequence[str]) -> str:
    return f"<@{user}> confirmed overwriting {', '.join(targets)}; promotion continues"


def build_failure_reply(component: str, platform: str, error: str) -> str:
    return f"*{component}* {platform} failed: {error}"


# ---- /aibrix sync (handlers/sync.py, handlers/blocks.py) ----------------------------------


def sync_to_release_repository(text: str, known: Sequence[str]) -> str:
    names = name_list(known) if known else "none are configured"
    return (
        f"{quote_input(text)} is the release repository itself: a sync copies a release from "
        f"it to a mirror, never onto it. Name a configured mirror: {names}"
    )


def sync_refused_unreadable(version: str) -> str:
    return (
        f"could not re-check the registry for {version}; nothing was synced, try again in a moment"
    )


def sync_queued(version: str, mirror: str) -> str:
    return f"{version} → {mirror}: sync queued; its progress is in the channel message"


def sync_already_running(version: str, mirror: str, link: str | None) -> str:
    where = f": {link}" if link else " (its message is being posted)"
    return (
        f"{version} is already syncing to {mirror}; see the message{where}. No second sync "
        "was started"
    )


SYNC_STATE_WORDS = {
    "queued": "queued",
    "running": "copying",
    "synced": "synced",
    "failed": "FAILED",
    "refused": "REFUSED",
}


def sync_title(version: str, mirror: str, state: str) -> str:
    return f"Sync {version} → {mirror}: {SYNC_STATE_WORDS.get(state, state)}"


def sync_requested_line(who: str, mode: str, location: str) -> str:
    """`who`: the requester as Slack markup (a mention)."""
    if mode == "ready":
        what = "an approver's sync of a ready, not yet approved release: its verified digests"
    else:
        what = "the approved digests of the promoted release"
    return f"asked by {who}; {what}; to `{location}`"


def sync_progress_summary(
    done: int, total: int, sent: int, planned: int, attempt: int, resumed: bool
) -> str:
    text = f"{done}/{total} components done · {human_bytes(sent)} of {human_bytes(planned)} copied"
    if resumed:
        text += f" · resumed by another worker (delivery {attempt})"
    return text


def sync_component_line(component: str, status: str, digest: str, detail: str) -> str:
    word = SYNC_STATUS_WORDS.get(status, status)
    line = f"`{component}` {word} {short_digest(digest) if digest else ''}".rstrip()
    return f"{line}: {detail}" if detail else line


def sync_component_waiting(component: str, digest: str) -> str:
    return f"`{component}` {short_digest(digest)} waiting"


# ---- --supersede (issue 10 item 2) --------------------------------------------------------


def supersede_bad_option(option: str) -> str:
    return f"unknown option {option!r}: `release` accepts only `--supersede`, after the version"


def supersede_twice() -> str:
    return "`--supersede` is given more than once"


# ---- the click-time re-check (issue 10 item 8) -------------------------------------------


def approval_registry_unreadable(version: str, components: Sequence[str]) -> str:
    return (
        f"could not re-check the registry; try again ({', '.join(components)} of {version} "
        "could not be read; nothing was recorded and the release stays ready)"
    )


# ---- Confirm overwrite (issue 10 item 9) -------------------------------------------------


def overwrite_already_confirmed(version: str, targets: Sequence[str]) -> str:
    return (
        f"already confirmed: overwriting {', '.join(targets)} for {version}; its promotion "
        "is queued once"
    )


# ---- /aibrix plan (handlers/blocks.py) -------------------------------------------------------


def plan_title(version: str, revision: str) -> str:
    return f"Plan of {version} at {revision[:12]}"


def plan_summary(components: int, builds: int, problems: int, dependencies_not_ok: int) -> str:
    parts = [f"{components} components in {builds} builds"]
    parts.append("no problems" if not problems else f"{problems} problems")
    if dependencies_not_ok:
        parts.append(f"{dependencies_not_ok} dependency images not ok")
    return " · ".join(parts)


def plan_shared(components: str, build: str) -> str:
    return f"{components} are one build (`{build}`): built once per platform"


def plan_nothing_changed() -> str:
    return "A plan changes nothing: no build is queued, no tag is written"


def plan_bad_option(option: str) -> str:
    return (
        f"unknown option {quote_input(option)}: `plan` takes a version and component "
        "names, no options"
    )


def approval_refused_dependencies(version: str) -> str:
    return f"approval of {version} refused: a dependency image lacks a required platform"


def approval_dependencies_unreadable(version: str, what: Sequence[str]) -> str:
    return (
        f"could not check the dependency images of {version}; try again ({'; '.join(what)}; "
        "nothing was recorded and the release stays ready)"
    )
