"""One exception tree for the whole project, so a caller can catch by meaning.

Every user-facing exception descends from `AibrixError`, through one of a few branches
that say what went wrong and carry the command line's exit status for it: the CLI maps
the root once instead of listing concrete classes. The message (`str()`) of every
exception is the sentence the user reads; the branches add no wording of their own.
"""

from __future__ import annotations

from typing import ClassVar


class AibrixError(Exception):
    """The project's root: a failure with a sentence fit for the user."""

    exit_code: ClassVar[int] = 1


class InvalidInput(AibrixError):
    """Bad input (a version, platform, reference, config, URL): nothing was touched."""

    exit_code: ClassVar[int] = 2


class UsageError(InvalidInput):
    """The command line was used wrongly (flags that do not go together, out-of-range
    values): the one usage error, reported before any I/O."""


class Refused(AibrixError):
    """A rule says no (permissions, the release state table, immutability)."""

    exit_code: ClassVar[int] = 2


class Unavailable(AibrixError):
    """A service could not be reached or read: Redis, a registry, the source."""

    exit_code: ClassVar[int] = 3


class NotFound(AibrixError):
    """The thing asked about does not exist (no such release)."""

    exit_code: ClassVar[int] = 1


class Failed(AibrixError):
    """Work ran and did not succeed (a build, a merge, a pushed image's check): the
    worker records it on the release, which ends blocked or failed."""

    exit_code: ClassVar[int] = 1
