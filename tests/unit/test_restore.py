"""SnapStart restore state (/health, /metrics) and the reseed after a restore."""

from __future__ import annotations

import json
import random

from secretcache.cache import TtlCache
from secretcache.metrics import snapshot
from secretcache.restore import CLOCK_JUMP, RestoreState, reseed_random
from secretcache.status import Status


def test_health_says_nothing_of_snapstart_when_it_is_off_and_nothing_was_restored() -> None:
    assert Status().health(True) == {"status": "ok"}
    assert Status().health(False) == {"status": "starting"}


def test_health_and_metrics_show_the_restores_without_names_or_values() -> None:
    status = Status()
    state = status.snapstart
    state.snapstart = True
    state.holding = True
    assert status.health(True)["snapStart"] == {
        "enabled": True,
        "holding": True,
        "restores": 0,
        "lastRestore": None,
    }
    state.holding = False
    state.record(CLOCK_JUMP, 7200.0004)
    state.prefetch_delay = 0.25
    shown = status.health(True)["snapStart"]
    assert shown["restores"] == 1 and shown["holding"] is False
    last = shown["lastRestore"]
    assert (last["reason"], last["clockJumpSeconds"], last["prefetchDelayMs"]) == (
        "clock-jump",
        7200.0,
        250.0,
    )
    assert last["at"].endswith("Z")
    cache = TtlCache(max_entries=1, max_bytes=1 << 20, policies={})
    cache.metrics.snapstart = state
    assert snapshot(cache)["snapStart"] == shown
    json.dumps(snapshot(cache))


def test_health_shows_snapstart_only_when_it_is_on() -> None:
    state = RestoreState()
    assert not state.shown
    state.snapstart = True
    assert state.shown


def test_reseeding_parts_two_copies_of_one_random_state() -> None:
    random.seed("one-snapshot")
    saved = random.getstate()
    reseed_random()
    first = random.random()
    random.setstate(saved)  # the second sandbox, restored from the same snapshot
    reseed_random()
    second = random.random()
    random.setstate(saved)
    same_without_reseed = random.random()
    random.setstate(saved)
    assert random.random() == same_without_reseed  # the copies would agree without it
    assert first != second
