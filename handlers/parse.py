"""What `/aibrix ...` text means: a pure function from text and config to a command.

Nothing here touches Redis, Slack or a registry. Every refusal is a `ParseError` whose
message says what was wrong and what is accepted; the handlers show it as it is.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from handlers import messages
from jobs.domain import messages as core_messages
from jobs.domain.config import Config
from jobs.domain.nightly import BranchError, parse_branch
from jobs.domain.references import InvalidReferenceError, Reference, parse_reference
from jobs.domain.versions import (
    ComponentError,
    VersionError,
    is_component_name,
    parse_version,
    validate_component_name,
)
from jobs.usecases.pipeline import ReleaseInputError, ReleasePlan, plan_release

MAX_TEXT_LENGTH = 500
# Letters, digits, blanks and the punctuation versions and image references need.
_ALLOWED = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 \t.-_/:@")
_RUN_ID = re.compile(r"^[0-9a-f]{8,64}\Z")
# Slack's ids, as Slack spells them (the config accepts the same shapes).
_USER_ID = re.compile(r"[UW][A-Z0-9]{2,31}")
_CHANNEL_ID = re.compile(r"[CGD][A-Z0-9]{2,31}")
_MESSAGE_TS = re.compile(r"[0-9]{1,12}\.[0-9]{1,9}")


@dataclass(frozen=True)
class ParseError:
    message: str


@dataclass(frozen=True)
class ReleaseCommand:
    plan: ReleasePlan
    supersede: bool = False  # an approver's emergency re-release of a promoted version


@dataclass(frozen=True)
class PlanCommand:
    plan: ReleasePlan  # what `release` with the same words would do


@dataclass(frozen=True)
class InspectCommand:
    reference: Reference
    component: str | None  # set when the user named a configured component


@dataclass(frozen=True)
class CardCommand:
    """A component's card: `/aibrix inspect COMPONENT` or `/aibrix status COMPONENT`."""

    component: str  # a configured component's name
    via: str  # "inspect" or "status": what the user typed (and the permission it needs)


@dataclass(frozen=True)
class StatusCommand:
    version: str | None


@dataclass(frozen=True)
class SyncCommand:
    version: str
    mirror: str  # a configured mirror's name (from Slack, never a location)
    ready: bool = False  # `--ready`: an approver's sync of a ready, not yet approved release


READY_FLAG = "--ready"


@dataclass(frozen=True)
class CancelCommand:
    version: str


@dataclass(frozen=True)
class RetryCommand:
    version: str


@dataclass(frozen=True)
class HelpCommand:
    pass


@dataclass(frozen=True)
class NightlyCommand:
    branch: str  # validated as a git branch name (`jobs.domain.nightly.parse_branch`)


@dataclass(frozen=True)
class WorkersCommand:
    """`/aibrix workers`: the live workers (read-only, like status)."""


Command = (
    ReleaseCommand
    | PlanCommand
    | InspectCommand
    | CardCommand
    | StatusCommand
    | SyncCommand
    | CancelCommand
    | RetryCommand
    | NightlyCommand
    | HelpCommand
    | WorkersCommand
)


def _version(text: str, config: Config) -> str:
    version = parse_version(text)
    config.check_version(version)
    return str(version)


SUPERSEDE = "--supersede"


def _release(args: Sequence[str], config: Config) -> Command | ParseError:
    if not args:
        return ParseError(f"{core_messages.version_empty()}; {messages.slack_usage('release')}")
    # One option exists, exactly spelled, after the version; anything else that looks
    # like an option is refused rather than taken for a component name.
    options = [a for a in args if a.startswith("-")]
    for option in options:
        if option != SUPERSEDE or args[0] == option:
            return ParseError(
                f"{messages.supersede_bad_option(option)}; {messages.slack_usage('release')}"
            )
    if len(options) > 1:
        return ParseError(f"{messages.supersede_twice()}; {messages.slack_usage('release')}")
    names = [a for a in args[1:] if a != SUPERSEDE]
    try:
        return ReleaseCommand(plan_release(config, args[0], names), supersede=bool(options))
    except ReleaseInputError as error:
        return ParseError(f"{error}; {messages.slack_usage('release')}")


def _plan(args: Sequence[str], config: Config) -> Command | ParseError:
    if not args:
        return ParseError(f"{core_messages.version_empty()}; {messages.slack_usage('plan')}")
    for word in args:
        if word.startswith("-"):  # no options: never taken for a component name either
            return ParseError(f"{messages.plan_bad_option(word)}; {messages.slack_usage('plan')}")
    try:
        return PlanCommand(plan_release(config, args[0], args[1:]))
    except ReleaseInputError as error:
        return ParseError(f"{error}; {messages.slack_usage('plan')}")


def _inspect(args: Sequence[str], config: Config) -> Command | ParseError:
    if len(args) not in (1, 2):
        return ParseError(messages.slack_wrong_arguments("inspect", len(args)))
    target = args[0]
    tag = args[1] if len(args) == 2 else None
    try:
        if target in config.component_names:
            if tag is None:
                return CardCommand(target, "inspect")
            return InspectCommand(parse_reference(f"{config.image(target)}:{tag}"), target)
        if "/" not in target and "." not in target and ":" not in target:
            # A bare word is meant as a component name: say which ones exist.
            validate_component_name(target, config.component_names)
        reference = parse_reference(target)
        if tag is not None:
            if "@" in target or ":" in target.rsplit("/", 1)[-1]:
                return ParseError(messages.slack_tag_twice(target))
            reference = parse_reference(f"{target}:{tag}")
    except (InvalidReferenceError, ComponentError) as error:
        return ParseError(f"{error}; {messages.slack_usage('inspect')}")
    return InspectCommand(reference, None)


def _one_version(name: str, args: Sequence[str], config: Config) -> str | ParseError:
    if len(args) != 1:
        if not args:
            return ParseError(f"{core_messages.version_empty()}; {messages.slack_usage(name)}")
        return ParseError(messages.slack_wrong_arguments(name, len(args)))
    try:
        return _version(args[0], config)
    except VersionError as error:
        return ParseError(f"{error}; {messages.slack_usage(name)}")


def _sync(args: Sequence[str], config: Config) -> Command | ParseError:
    ready = len(args) == 3 and args[2] == READY_FLAG
    if len(args) != 2 and not ready:
        return ParseError(messages.slack_wrong_arguments("sync", len(args)))
    version = _one_version("sync", args[:1], config)
    if isinstance(version, ParseError):
        return version
    mirror = args[1]
    if mirror not in config.mirrors:
        # From Slack the bot's own credentials would do the copy: only the mirrors the
        # config names, never a location a user types.
        names = sorted(config.mirrors)
        if _is_release_repository(mirror, config):
            return ParseError(messages.sync_to_release_repository(mirror, names))
        return ParseError(core_messages.sync_mirror_names_only(mirror, names))
    return SyncCommand(version, mirror, ready)


def _names_component(word: str) -> bool:
    """`word` is meant as a component name, not a version: it has a component name's
    shape and does not start like a version (`v` and a digit)."""
    return is_component_name(word) and not re.match(r"v[0-9]", word)


def _is_release_repository(text: str, config: Config) -> bool:
    """`text` names the release repository (or its registry) rather than a mirror."""
    repository = config.repository.rstrip("/")
    given = text.rstrip("/")
    return given in (repository, repository.split("/", 1)[0])


def parse_command(text: str, config: Config) -> Command | ParseError:
    """The command `text` (what follows `/aibrix`) asks for, or why it cannot be run."""
    if len(text) > MAX_TEXT_LENGTH:
        return ParseError(messages.slack_text_too_long(len(text), MAX_TEXT_LENGTH))
    for char in text:
        if char not in _ALLOWED:
            return ParseError(messages.slack_bad_character(char))
    words = text.split()
    if not words:
        return HelpCommand()
    name, args = words[0].lower(), words[1:]
    if name == "help":
        return HelpCommand() if not args else ParseError(messages.slack_usage("help"))
    if name == "release":
        return _release(args, config)
    if name == "plan":
        return _plan(args, config)
    if name == "inspect":
        return _inspect(args, config)
    if name == "status":
        if not args:
            return StatusCommand(None)
        if len(args) == 1 and _names_component(args[0]):
            try:
                return CardCommand(config.component(args[0]).name, "status")
            except ComponentError as error:
                return ParseError(f"{error}; {messages.slack_usage('status')}")
        version = _one_version("status", args, config)
        return version if isinstance(version, ParseError) else StatusCommand(version)
    if name == "sync":
        return _sync(args, config)
    if name == "nightly":
        if len(args) > 1:
            return ParseError(messages.slack_usage("nightly"))
        try:
            return NightlyCommand(parse_branch(args[0] if args else None))
        except BranchError as error:
            return ParseError(f"{error}; {messages.slack_usage('nightly')}")
    if name == "workers":
        return WorkersCommand() if not args else ParseError(messages.slack_usage("workers"))
    if name in ("cancel", "retry"):
        version = _one_version(name, args, config)
        if isinstance(version, ParseError):
            return version
        return CancelCommand(version) if name == "cancel" else RetryCommand(version)
    return ParseError(messages.slack_unknown_subcommand(words[0]))


# ---- buttons ------------------------------------------------------------------------


@dataclass(frozen=True)
class ButtonValue:
    version: str
    run_id: str


def button_value(version: str, run_id: str) -> str:
    """What an Approve, Reject or Retry button carries."""
    return json.dumps({"version": version, "run_id": run_id}, separators=(",", ":"))


def parse_button_value(raw: object) -> ButtonValue | ParseError:
    """The release a clicked button names, checked: JSON with exactly a valid version and
    a run id."""
    if not isinstance(raw, str) or len(raw) > 300:
        return ParseError(messages.slack_bad_button("no value"))
    try:
        data = json.loads(raw)
    except ValueError:
        return ParseError(messages.slack_bad_button("not JSON"))
    if not isinstance(data, Mapping) or set(data) != {"version", "run_id"}:
        return ParseError(messages.slack_bad_button("not a version and a run id"))
    version, run_id = data["version"], data["run_id"]
    if not isinstance(version, str) or not isinstance(run_id, str):
        return ParseError(messages.slack_bad_button("not a version and a run id"))
    try:
        version = str(parse_version(version))
    except VersionError:
        return ParseError(messages.slack_bad_button("not a release version"))
    if not _RUN_ID.match(run_id):
        return ParseError(messages.slack_bad_button("not a run id"))
    return ButtonValue(version, run_id)


# ---- deliveries -----------------------------------------------------------------------


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def command_delivery(body: Mapping[str, object]) -> str | None:
    """What identifies one slash command invocation across Slack's redeliveries: its
    trigger_id (unique per invocation, the same in every retry), with the team and user.
    None when the body carries no trigger_id."""
    trigger = _text(body.get("trigger_id"))
    if not trigger:
        return None
    return "command\n" + "\n".join(
        (_text(body.get("team_id")), _text(body.get("user_id")), trigger)
    )


def action_delivery(body: Mapping[str, object]) -> str | None:
    """What identifies one button click across Slack's redeliveries: the message clicked
    (channel and ts), the action and its action_ts, and the clicker. None when Slack's
    fields are missing."""
    actions = body.get("actions")
    first = actions[0] if isinstance(actions, list) and actions else None
    if not isinstance(first, Mapping):
        return None
    action_ts = _text(first.get("action_ts"))
    if not action_ts:
        return None
    container = body.get("container")
    where = container if isinstance(container, Mapping) else {}
    team = body.get("team")
    user = body.get("user")
    return "action\n" + "\n".join(
        (
            _text(team.get("id")) if isinstance(team, Mapping) else "",
            _text(where.get("channel_id")),
            _text(where.get("message_ts")),
            _text(first.get("action_id")),
            action_ts,
            _text(user.get("id")) if isinstance(user, Mapping) else "",
        )
    )


# ---- who and where --------------------------------------------------------------------


@dataclass(frozen=True)
class Origin:
    """Who sent a command or click, and where from: Slack's ids, checked."""

    user: str
    channel: str


@dataclass(frozen=True)
class ClickOrigin(Origin):
    message_ts: str  # the message whose button was clicked


def _id_field(value: object, pattern: re.Pattern[str]) -> str | None:
    return value if isinstance(value, str) and pattern.fullmatch(value) else None


def command_origin(body: Mapping[str, object]) -> Origin | ParseError:
    """The slash command's `user_id` and `channel_id`, or why they are not usable."""
    user = _id_field(body.get("user_id"), _USER_ID)
    if user is None:
        return ParseError(messages.slack_bad_identity("user_id", "U0123ABCD"))
    channel = _id_field(body.get("channel_id"), _CHANNEL_ID)
    if channel is None:
        return ParseError(messages.slack_bad_identity("channel_id", "C0123ABCD"))
    return Origin(user, channel)


def click_origin(body: Mapping[str, object]) -> ClickOrigin | ParseError:
    """The clicker (`user.id`) and the message clicked (`container`: its channel and ts),
    or why they are not usable. Slack also sends `channel.id` and `message.ts`; when
    present they must agree with the container, so a click cannot name two places."""
    user_field = body.get("user")
    user = _id_field(user_field.get("id") if isinstance(user_field, Mapping) else None, _USER_ID)
    if user is None:
        return ParseError(messages.slack_bad_identity("user id", "U0123ABCD"))
    container = body.get("container")
    if not isinstance(container, Mapping) or container.get("type") != "message":
        return ParseError(messages.click_bad_origin("no message container"))
    channel = _id_field(container.get("channel_id"), _CHANNEL_ID)
    if channel is None:
        return ParseError(messages.slack_bad_identity("channel id", "C0123ABCD"))
    ts = _id_field(container.get("message_ts"), _MESSAGE_TS)
    if ts is None:
        return ParseError(messages.click_bad_origin("no message ts"))
    channel_field = body.get("channel")
    if channel_field is not None and (
        not isinstance(channel_field, Mapping) or channel_field.get("id") != channel
    ):
        return ParseError(messages.click_bad_origin("two different channels"))
    message_field = body.get("message")
    if message_field is not None and (
        not isinstance(message_field, Mapping) or message_field.get("ts") != ts
    ):
        return ParseError(messages.click_bad_origin("two different messages"))
    return ClickOrigin(user, channel, ts)
