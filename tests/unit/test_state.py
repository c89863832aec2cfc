"""The release state machine: the pure table exhaustively, then its record in real Redis."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobs.domain.release import (
    BUILD_TRANSITIONS,
    EVENT_TARGETS,
    SETTLED,
    TERMINAL,
    TRANSITIONS,
    BuildState,
    Event,
    InvalidTransition,
    State,
    allows_new_run,
    build_sources,
    can_transition,
    next_state,
)

S = State
# Written out edge by edge, independently of the module's table, from DESIGN.md.
EDGES = {
    (S.QUEUED, S.BUILDING),
    (S.BUILDING, S.MERGING),
    (S.MERGING, S.VERIFYING),
    (S.VERIFYING, S.READY),
    (S.VERIFYING, S.BLOCKED),
    (S.READY, S.APPROVED),
    (S.APPROVED, S.PROMOTING),
    (S.PROMOTING, S.PROMOTED),
    # the click-time re-check can still block a ready or approved release
    (S.READY, S.BLOCKED),
    (S.APPROVED, S.BLOCKED),
    # failure while work is running
    (S.QUEUED, S.FAILED),
    (S.BUILDING, S.FAILED),
    (S.MERGING, S.FAILED),
    (S.VERIFYING, S.FAILED),
    (S.PROMOTING, S.FAILED),
    # cancel, except once tags are being moved
    (S.QUEUED, S.CANCELLED),
    (S.BUILDING, S.CANCELLED),
    (S.MERGING, S.CANCELLED),
    (S.VERIFYING, S.CANCELLED),
    (S.READY, S.CANCELLED),
    (S.APPROVED, S.CANCELLED),
    (S.BLOCKED, S.CANCELLED),
}


@pytest.mark.parametrize(("current", "target"), list(itertools.product(State, State)))
def test_transition_table_is_exactly_the_design(current: State, target: State) -> None:
    assert can_transition(current, target) == ((current, target) in EDGES)


@pytest.mark.parametrize(("current", "event"), list(itertools.product(State, Event)))
def test_next_state_follows_the_table_or_refuses(current: State, event: Event) -> None:
    target = EVENT_TARGETS[event]
    if (current, target) in EDGES:
        assert next_state(current, event) is target
    else:
        with pytest.raises(InvalidTransition) as caught:
            next_state(current, event)
        assert current.value in str(caught.value) and event.value in str(caught.value)
        assert (caught.value.current, caught.value.target) == (current, target)


def test_table_shape() -> None:
    assert set(TRANSITIONS) == set(State)
    assert {S.PROMOTED, S.FAILED, S.CANCELLED} == TERMINAL
    assert {S.PROMOTED, S.FAILED, S.CANCELLED, S.BLOCKED} == SETTLED
    for state in State:
        assert not can_transition(state, state)  # no self-loops: a repeat is a no-op CAS
        assert (not TRANSITIONS[state]) == (state in TERMINAL)
        assert allows_new_run(state) == (state in {S.PROMOTED, S.FAILED, S.CANCELLED, S.BLOCKED})
    # Every state is reachable from queued, and no path loops.
    seen, frontier = {S.QUEUED}, [S.QUEUED]
    while frontier:
        for target in TRANSITIONS[frontier.pop()]:
            if target not in seen:
                seen.add(target)
                frontier.append(target)
    assert seen == set(State)
    order = [S.QUEUED, S.BUILDING, S.MERGING, S.VERIFYING, S.READY, S.APPROVED, S.PROMOTING]
    for current, target in EDGES:
        if current in order and target in order:
            assert order.index(target) > order.index(current)


@given(st.lists(st.sampled_from(list(Event)), max_size=30))
def test_any_event_sequence_stays_in_the_table(events: list[Event]) -> None:
    state = S.QUEUED
    for event in events:
        try:
            new = next_state(state, event)
        except InvalidTransition:
            continue
        assert (state, new) in EDGES
        state = new
    if state in TERMINAL:
        assert all(not can_transition(state, target) for target in State)


B = BuildState
BUILD_EDGES = {
    (B.QUEUED, B.BUILDING),
    (B.QUEUED, B.PUSHED),
    (B.QUEUED, B.FAILED),
    (B.QUEUED, B.CANCELLED),
    (B.BUILDING, B.BUILDING),
    (B.BUILDING, B.PUSHED),
    (B.BUILDING, B.FAILED),
    (B.BUILDING, B.CANCELLED),
    (B.FAILED, B.BUILDING),
    (B.FAILED, B.PUSHED),
    (B.FAILED, B.CANCELLED),
}


@pytest.mark.parametrize(("current", "target"), list(itertools.product(B, B)))
def test_build_transitions(current: BuildState, target: BuildState) -> None:
    assert (target in BUILD_TRANSITIONS[current]) == ((current, target) in BUILD_EDGES)
    assert (current in build_sources(target)) == ((current, target) in BUILD_EDGES)
