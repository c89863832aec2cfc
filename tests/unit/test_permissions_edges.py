"""Edge cases of the permission table (`jobs.domain.permissions`): an action the table
does not list is granted to nobody, and the answer says so (issue 15)."""

from __future__ import annotations

from jobs.domain.permissions import Action, Actor, Grant, Permissions, authorize, needs_groups


def test_an_action_missing_from_the_table_is_granted_to_nobody() -> None:
    table = Permissions(("C0RELEASES",))
    assert table.grant(Action.RELEASE) == Grant()
    actor = Actor("U0ALICE", frozenset({"S0ANY"}), "C0RELEASES")
    refusal = authorize(table, Action.RELEASE, actor)
    assert (
        refusal == "<@U0ALICE> may not release here; the config's permissions grant it to: nobody"
    )
    assert not needs_groups(table, Action.RELEASE, actor)
    assert authorize(table, Action.STATUS, actor) is None
