"""When each sandbox lives: the fleet's shape over time turned into (start, end, warm) arrays.

A sandbox "slot" is one unit of concurrency. A slot is active while the fleet needs it; within
its active spans it holds sandboxes back to back, each living `lifetime` times a uniform factor
in [0.5, 1.5) (Lambda recycles even busy sandboxes). A sandbox that exists at t=0 of a steady
or daily fleet starts with a warm cache; every other one is a cold start.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .model import DAY, SHAPES, Fleet


@dataclass
class Population:
    start: np.ndarray  # seconds
    end: np.ndarray
    warm: np.ndarray  # bool: cache already warm at `start` (a sandbox older than the run)

    def __len__(self) -> int:
        return len(self.start)

    def live_counts(self, dt: float, steps: int) -> np.ndarray:
        """Sandboxes alive in each time step (by start/end falling in the step)."""
        starts = np.clip((self.start / dt).astype(np.int64), 0, steps)
        ends = np.clip((self.end / dt).astype(np.int64), 0, steps)
        delta = np.bincount(starts, minlength=steps + 1) - np.bincount(ends, minlength=steps + 1)
        return np.cumsum(delta)[:steps].astype(np.float64)

    def cold_starts(self, dt: float, steps: int) -> np.ndarray:
        cold = ~self.warm
        idx = np.clip((self.start[cold] / dt).astype(np.int64), 0, steps - 1)
        return np.bincount(idx, minlength=steps).astype(np.float64)


def _spans(
    fleet: Fleet, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Active spans of every slot: (slot, begin, finish, warm_at_begin)."""
    n, h = fleet.sandboxes, fleet.horizon
    slots = np.arange(n)
    if fleet.shape not in SHAPES:
        raise ValueError(f"shape must be one of {', '.join(SHAPES)}")
    if fleet.shape in ("steady", "deploy"):
        return slots, np.zeros(n), np.full(n, h), np.ones(n, bool)
    if fleet.shape == "burst":
        at = fleet.event_at or 0.0
        begin = at + rng.random(n) * fleet.spread
        return slots, begin, np.full(n, h), np.zeros(n, bool)
    # daily: the fleet follows a cosine from `trough` (t=0, night) to the peak at half a day.
    share = slots / n
    lo = fleet.trough
    always = share < lo
    c = np.clip(1.0 - 2.0 * (share - lo) / max(1e-9, 1.0 - lo), -1.0, 1.0)
    t_on = DAY / (2 * np.pi) * np.arccos(c)
    out_slot, out_begin, out_finish, out_warm = (
        [slots[always]],
        [np.zeros(always.sum())],
        [np.full(always.sum(), h)],
        [np.ones(always.sum(), bool)],
    )
    part = ~always
    for day in range(int(np.ceil(h / DAY))):
        begin = day * DAY + t_on[part]
        finish = np.minimum(day * DAY + DAY - t_on[part], h)
        keep = begin < h
        out_slot.append(slots[part][keep])
        out_begin.append(begin[keep])
        out_finish.append(finish[keep])
        out_warm.append(np.zeros(keep.sum(), bool))
    return (
        np.concatenate(out_slot),
        np.concatenate(out_begin),
        np.concatenate(out_finish),
        np.concatenate(out_warm),
    )


def _split_at_deploy(
    slot: np.ndarray, begin: np.ndarray, finish: np.ndarray, warm: np.ndarray, at: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every span alive at its slot's deploy time ends there; a cold span takes over."""
    cut = at[slot]
    crossing = (begin < cut) & (finish > cut)
    new_begin = cut[crossing]
    new_finish = finish[crossing]
    finish = np.where(crossing, cut, finish)
    return (
        np.concatenate([slot, slot[crossing]]),
        np.concatenate([begin, new_begin]),
        np.concatenate([finish, new_finish]),
        np.concatenate([warm, np.zeros(crossing.sum(), bool)]),
    )


def build_population(fleet: Fleet, rng: np.random.Generator) -> Population:
    slot, begin, finish, warm = _spans(fleet, rng)
    if fleet.shape == "deploy" or (fleet.shape == "daily" and fleet.event_at is not None):
        at = fleet.event_at if fleet.event_at is not None else fleet.horizon / 2
        deploy_at = at + rng.random(fleet.sandboxes) * fleet.spread
        slot, begin, finish, warm = _split_at_deploy(slot, begin, finish, warm, deploy_at)
    starts, ends, warms = [], [], []
    cur = begin.copy()
    first = warm.copy()
    active = cur < finish
    while active.any():
        idx = np.nonzero(active)[0]
        life = fleet.lifetime * (0.5 + rng.random(len(idx)))
        # A sandbox alive at t=0 is part-way through its life: its remaining life is uniform.
        life = np.where(first[idx], life * rng.random(len(idx)), life)
        stop = np.minimum(cur[idx] + life, finish[idx])
        starts.append(cur[idx])
        ends.append(stop)
        warms.append(first[idx])
        cur[idx] = stop
        first[idx] = False
        active = cur < finish
    if not starts:
        empty = np.zeros(0)
        return Population(empty, empty, np.zeros(0, bool))
    return Population(np.concatenate(starts), np.concatenate(ends), np.concatenate(warms))
