"""Discrete-event simulation of a fleet of secretcache extensions against AWS's rate limits.

What one extension does, per cached item (see extension/secretcache/cache.py, backends.py):
a stored entry lives `ttl * (1 - jitter * U)`; a hit in the last `refresh_ahead * ttl` of that
life starts one background refresh (a batch read renews all its cached items in one batch call
once one of them is due); a miss makes the handler wait for one call (single-flight: a sandbox
serves one invocation at a time, so one call per item, or per chunk of a batch); a throttled
call is retried with full-jitter backoff up to MAX_ATTEMPTS within the timeout; after the last
failure the read is served stale if its entries expired less than `max_stale` ago (a batch
chunk: all its items), else the handler gets a 429.

Throttle memory (extension/secretcache/throttle.py; single reads, `throttle_backoff` > 0): a
load that ends throttled backs its key off for min(max, base x 2^(k-1)) x (0.5 + 0.5 U) after
the k-th such load in a row, and marks its API throttled for `service_memory` seconds. Reads of
the key during the back-off that may be served stale make no call; a read with no value to
serve makes one attempt (no retries), which when throttled is a 429 and grows the back-off.
The first read after the back-off, while the API is still marked, is served stale at once and
refreshes in the background with a single attempt (STALE_FIRST); once the mark has gone, a read
waits through the usual retries. A refresh-ahead while the API is marked also makes a single
attempt.

How it stays fast at 10,000 sandboxes over a day:
- Event skipping: invocations are a Poisson process per sandbox, so the time of the next read
  that matters (the first one inside the refresh window, or the first after expiry) is drawn
  directly; only reads that reach AWS become events, never the hits between them.
- Lock-step vectors: time advances in steps of `dt`; every event due in a step is handled with
  numpy at once. A step's calls pass one token bucket per API in time order (the limit is
  shared by the whole account, so this is where sandboxes interact). Retries land at their
  exact backoff time, processed in the step that contains it (or the next one).
- A look-ahead window: every `window` seconds the chains due in the window are pulled from the
  full state array and sorted; events scheduled inside the window go to a small pending list.
- Reads that cannot be cached (TTL 0, not-found with no not-found TTL) are a per-step Poisson
  count instead of events: they depend on nothing but the number of live sandboxes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .model import API_SM_BATCH, API_SM_GET, API_SSM, Fleet, Limits, Policy
from .population import Population, build_population

N_API = 3
COARSE_ABOVE = 2000
PREFETCH, MISS, REFRESH, STALE_FIRST = 0, 1, 2, 3


@dataclass
class Result:
    """Per-step series and totals of one simulated run."""

    policy: Policy
    fleet: Fleet
    limits: Limits
    dt: float
    calls: np.ndarray  # (N_API, steps): attempts sent to AWS, throttled ones included
    throttled: np.ndarray  # (N_API, steps)
    live: np.ndarray  # sandboxes alive per step
    reads: float  # item reads the handlers made (expected count)
    waited: float  # reads that waited for AWS (cache miss answered)
    failed: float  # reads answered with an error after every retry
    stale: float  # reads answered with an expired value after every retry failed
    cold_starts: int
    events: int  # chain events processed (for the speed figure)

    def per_second(self, series: np.ndarray) -> np.ndarray:
        """A per-step series summed into whole seconds (calls/s)."""
        per = max(1, round(1.0 / self.dt))
        n = series.shape[-1] // per * per
        summed: np.ndarray = series[..., :n].reshape(*series.shape[:-1], -1, per).sum(-1)
        return summed / (per * self.dt)


@dataclass
class _Chains:
    """One chain per (sandbox, cached item group): its state and next event."""

    sandbox: np.ndarray
    api: np.ndarray  # API of its reads (single or batch)
    pre_api: np.ndarray  # API of its prefetch calls (batch calls for two or more items)
    pre_calls: np.ndarray  # its calls at prefetch: a batch call is charged to its first chain
    ttl: np.ndarray
    refresh_ahead: np.ndarray  # bool
    single: np.ndarray  # bool: stale-on-error applies (single reads and batch chunks)
    backs_off: np.ndarray  # bool: throttle memory applies (single reads, with the setting on)
    bo_until: np.ndarray  # end of the key's back-off
    bo_fail: np.ndarray  # throttled loads in a row
    slots: np.ndarray  # items in the group
    expiry: np.ndarray  # (chains, max_slots); -inf empty, +inf unused slot
    phase: np.ndarray
    attempt: np.ndarray
    first_try: np.ndarray
    next_t: np.ndarray


def _build_chains(
    pop: Population, fleet: Fleet, policy: Policy, rng: np.random.Generator
) -> tuple[_Chains, dict[int, float]]:
    """Chains for the cached items, and items per invocation per API read without a cache."""
    # api, pre_api, ttl, refresh-ahead, stale-on-error, items, prefetch calls, backs off
    groups: list[tuple[int, int, float, bool, bool, int, int, bool]] = []
    uncached: dict[int, float] = {}
    ra = policy.refresh_ahead > 0
    backs = policy.throttle_backoff > 0

    def add(count: int, ttl: float, single_api: int, batch_api: int, limit: int) -> None:
        """Chains for `count` items. The prefetch (prefetch.py) reads two or more items in batch
        calls of `limit` (one item alone singly), whatever the reads' own policy."""
        if count <= 0:
            return
        pre_api = batch_api if count >= 2 else single_api
        if ttl <= 0:
            # Calls per invocation: one per item, or one per batch of `limit`.
            api = batch_api if policy.batch else single_api
            per_call = limit if policy.batch else 1
            uncached[api] = uncached.get(api, 0.0) + math.ceil(count / per_call)
            return
        if policy.batch:
            left = count
            while left > 0:
                n = min(left, limit)
                groups.append((batch_api, pre_api, ttl, ra, True, n, 1, False))
                left -= n
        else:
            groups.extend(
                (single_api, pre_api, ttl, ra, True, 1, int(i % limit == 0), backs)
                for i in range(count)
            )

    add(fleet.ssm_items, policy.ssm_ttl, API_SSM, API_SSM, policy.ssm_batch_limit)
    add(fleet.sm_items, policy.sm_ttl, API_SM_GET, API_SM_BATCH, policy.sm_batch_limit)
    if fleet.missing_items > 0:
        if policy.not_found_ttl > 0:
            # Not-found answers are cached like values but never refreshed ahead or served stale.
            groups.extend(
                (API_SSM, API_SSM, policy.not_found_ttl, False, False, 1, 1, backs)
                for _ in range(fleet.missing_items)
            )
        else:
            uncached[API_SSM] = uncached.get(API_SSM, 0.0) + fleet.missing_items

    n_sb, n_g = len(pop), len(groups)
    sandbox = np.repeat(np.arange(n_sb), n_g)
    g = np.tile(np.arange(n_g), n_sb)
    table = np.array(groups, dtype=np.float64).reshape(n_g, 8) if n_g else np.zeros((0, 8))
    slots = table[g, 5].astype(np.int64)
    max_slots = int(slots.max()) if len(slots) else 1
    c = len(sandbox)
    expiry = np.full((c, max_slots), np.inf)
    expiry[np.arange(max_slots)[None, :] < slots[:, None]] = -np.inf
    chains = _Chains(
        sandbox=sandbox,
        api=table[g, 0].astype(np.int64),
        pre_api=table[g, 1].astype(np.int64),
        pre_calls=table[g, 6].astype(np.int64),
        ttl=table[g, 2],
        refresh_ahead=table[g, 3].astype(bool),
        single=table[g, 4].astype(bool),
        backs_off=table[g, 7].astype(bool),
        bo_until=np.full(c, -np.inf),
        bo_fail=np.zeros(c, np.int64),
        slots=slots,
        expiry=expiry,
        phase=np.full(c, PREFETCH if policy.prefetch else MISS, np.int8),
        attempt=np.zeros(c, np.int64),
        first_try=pop.start[sandbox].copy(),
        next_t=pop.start[sandbox].copy(),
    )
    # Sandboxes older than the run: their entries were stored at a uniformly random earlier time.
    warm = np.nonzero(pop.warm[sandbox])[0]
    if len(warm):
        ttl = chains.ttl[warm][:, None]
        life = ttl * (1.0 - policy.jitter * rng.random((len(warm), max_slots)))
        # A refreshed-ahead entry is renewed as soon as its window opens, so in steady state its
        # remaining life is spread over the part of its life before the window.
        floor = np.where(chains.refresh_ahead[warm], policy.refresh_ahead, 0.0)[:, None] * ttl
        left = floor + rng.random((len(warm), max_slots)) * np.maximum(life - floor, 0.0)
        empty = chains.expiry[warm] == -np.inf
        chains.expiry[warm] = np.where(empty, left, np.inf)
        _schedule_after_store(chains, warm, np.zeros(len(warm)), fleet, policy, rng)
    return chains, uncached


def _schedule_after_store(
    ch: _Chains,
    idx: np.ndarray,
    now: np.ndarray,
    fleet: Fleet,
    policy: Policy,
    rng: np.random.Generator,
) -> None:
    """Next event of chains whose entries were just stored: a refresh-ahead or the next miss."""
    lam = fleet.per_sandbox_rate
    earliest = ch.expiry[idx].min(axis=1)
    window_start = earliest - policy.refresh_ahead * ch.ttl[idx]
    ra = ch.refresh_ahead[idx]
    gap = rng.exponential(1.0 / lam, len(idx)) if lam > 0 else np.full(len(idx), np.inf)
    # With refresh-ahead: the first read after the window opens. If it falls past expiry, no read
    # came in the window, and that same read is the first after expiry: a miss.
    from_t = np.where(ra, np.maximum(window_start, now), np.maximum(earliest, now))
    t = from_t + gap
    ch.phase[idx] = np.where(ra & (t < earliest), REFRESH, MISS)
    ch.next_t[idx] = t
    ch.first_try[idx] = t
    ch.attempt[idx] = 0


def simulate(
    fleet: Fleet,
    policy: Policy,
    limits: Limits | None = None,
    *,
    seed: int = 1,
    dt: float | None = None,
    coarse: bool | None = None,
) -> Result:
    """Run one policy on one fleet; deterministic for a given seed.

    `dt` defaults to 1 s for runs longer than 4 hours (the limit is per second) and 0.1 s for
    shorter ones; `coarse` (default: above COARSE_ABOVE sandboxes) skips refresh-ahead retries.
    """
    if coarse is None:
        coarse = fleet.sandboxes > COARSE_ABOVE
    limits = limits or Limits()
    dt = dt or (1.0 if fleet.horizon > 4 * 3600 else 0.1)
    rng = np.random.default_rng(seed)
    pop = build_population(fleet, rng)
    steps = math.ceil(fleet.horizon / dt)
    live = pop.live_counts(dt, steps)
    ch, uncached = _build_chains(pop, fleet, policy, rng)
    end_of = pop.end
    lam = fleet.per_sandbox_rate
    rates = np.array(limits.rates, dtype=np.float64)
    cap = np.maximum(rates * limits.burst, 1.0)
    tokens = cap.copy()
    calls = np.zeros((N_API, steps))
    throttled = np.zeros((N_API, steps))
    totals = {"waited": 0.0, "failed": 0.0, "stale": 0.0}
    events = 0
    # Attempts that belong to no chain, by attempt number: uncached reads, and the reads of
    # chains in the backlog (expired and failing: every read tries AWS again).
    unc_levels = {a: np.zeros(policy.max_attempts) for a in uncached}
    backlog = [_Backlog(policy.max_attempts) for _ in range(N_API)]
    # How long a read that fails every attempt keeps its handler waiting (mean backoffs plus
    # the attempts themselves, within the timeout): the backlog's sandboxes invoke less often.
    fail_wait = min(
        policy.timeout,
        policy.max_attempts * fleet.throttled_latency
        + sum(
            0.5 * min(policy.backoff_cap, policy.backoff_base * 2.0**k)
            for k in range(1, policy.max_attempts)
        ),
    )

    min_ttl = float(ch.ttl.min()) if len(ch.ttl) else fleet.horizon
    window = max(8 * dt, min(60.0, 0.5 * min_ttl))
    win_ids = np.zeros(0, np.int64)
    win_t = np.zeros(0)
    win_pos = 0
    win_end = -np.inf
    pending = _Pending()
    busy = np.zeros(len(pop))  # until when each sandbox's handler is waiting on AWS
    svc_until = np.full(N_API, -np.inf)  # until when each API counts as throttled (memory)

    for step in range(steps):
        t0 = step * dt
        t1 = t0 + dt
        tokens = np.minimum(cap, tokens + rates * dt)
        if t0 >= win_end:
            # Chains due in the next window; anything scheduled inside it goes to `pending`.
            new_end = t0 + window
            pick = np.nonzero((ch.next_t >= win_end) & (ch.next_t < new_end))[0]
            order = np.argsort(ch.next_t[pick], kind="stable")
            win_ids, win_t = pick[order], ch.next_t[pick][order]
            win_pos, win_end = 0, new_end
            for b in backlog:
                b.drop_dead(end_of[ch.sandbox[b.ids]] > t0)
        hi = int(np.searchsorted(win_t, t1, side="left"))
        due = np.concatenate([win_ids[win_pos:hi], pending.pop_before(t1)])
        win_pos = hi
        for a, per_inv in uncached.items():
            new = float(rng.poisson(lam * live[step] * per_inv * dt))
            unc_levels[a][0] += new
            totals["waited"] += new
        failing = sum(len(b.ids) for b in backlog)
        if failing:
            per_sandbox = failing / max(1.0, live[step])
            # A sandbox retries one item at a time: at most one failing read per `fail_wait`.
            rate = min(lam, 1.0 / max(1e-9, per_sandbox * fail_wait))
            p_read = 1.0 - math.exp(-rate * dt)
            for b in backlog:
                if len(b.ids):
                    b.levels[0] += float(rng.binomial(len(b.ids), p_read))
        idle = len(due) == 0 and not any(v.any() for v in unc_levels.values())
        if idle and not any(b.levels.any() for b in backlog):
            continue
        times = ch.next_t[due]
        alive = times < end_of[ch.sandbox[due]]
        due, times = due[alive], times[alive]
        # A sandbox runs one invocation at a time: a read that finds its sandbox still waiting
        # on AWS (retrying another item) happens when that wait ends.
        wait_until = busy[ch.sandbox[due]]
        later = (wait_until > times) & (ch.attempt[due] == 0)
        if later.any():
            moved = due[later]
            ch.next_t[moved] = wait_until[later] + 1e-3
            ch.first_try[moved] = ch.next_t[moved]
            inside = moved[ch.next_t[moved] < win_end]
            pending.add(inside, ch.next_t[inside])
            due, times = due[~later], times[~later]
        events += len(due)
        phase = ch.phase[due]
        if policy.throttle_backoff > 0 and len(due):
            # An expired key's read while its API is marked throttled: stale at once, and one
            # background attempt instead of the handler waiting through retries.
            first = (phase == MISS) & ch.backs_off[due] & (ch.attempt[due] == 0)
            first &= svc_until[ch.api[due]] > times
            if first.any():
                first &= _can_stale(ch, due, times, policy)
                phase[first] = STALE_FIRST
                ch.phase[due[first]] = STALE_FIRST
                totals["stale"] += float(first.sum())
        api = np.where(phase == PREFETCH, ch.pre_api[due], ch.api[due])
        ncalls = np.where(phase == PREFETCH, ch.pre_calls[due], 1)
        ok = np.ones(len(due), bool)
        order = np.argsort(times, kind="stable")
        for a in range(N_API):
            sel = order[api[order] == a]
            unc = unc_levels.get(a)
            bl = backlog[a]
            chain_demand = float(ncalls[sel].sum())
            anon = float(bl.levels.sum()) + (float(unc.sum()) if unc is not None else 0.0)
            total = chain_demand + anon
            if total == 0:
                continue
            calls[a, step] += total
            budget = float(math.floor(tokens[a]))
            if total <= budget:
                tokens[a] -= total
                share = 1.0
            else:
                # Over the limit: the chains' calls take their share of the tokens in time
                # order, the anonymous attempts the rest; everything else is throttled.
                tokens[a] -= budget
                chain_budget = math.floor(budget * chain_demand / total)
                passed = np.cumsum(ncalls[sel]) <= chain_budget
                ok[sel[~passed]] = False
                throttled[a, step] += float(ncalls[sel][~passed].sum())
                left = budget - float(ncalls[sel][passed].sum())
                share = min(1.0, left / anon) if anon else 1.0
            unc_sum = float(unc.sum()) if unc is not None else 0.0
            if unc is not None:
                rejected = _retry_levels(unc, round(share * unc_sum), rng)
                throttled[a, step] += float(rejected.sum())
                totals["failed"] += float(rejected[-1])
                totals["waited"] -= float(rejected[-1])
            if bl.levels.any():
                answered = float(bl.levels.sum())
                rejected = _retry_levels(bl.levels, round(share * answered), rng)
                answered -= float(rejected.sum())
                throttled[a, step] += float(rejected.sum())
                _settle_backlog(ch, bl, answered, rejected[-1], t0, fleet, policy, rng, totals)
                _restore(
                    ch, bl, answered, t0 + 0.5 * dt, fleet, policy, rng, win_end, pending, totals
                )
        if len(due):
            _advance(
                ch,
                due,
                times,
                ok,
                phase,
                fleet,
                policy,
                rng,
                win_end,
                pending,
                backlog,
                totals,
                coarse,
                busy,
                svc_until,
            )
    item_reads = (fleet.ssm_items + fleet.sm_items + fleet.missing_items) * lam * live.sum() * dt
    return Result(
        policy=policy,
        fleet=fleet,
        limits=limits,
        dt=dt,
        calls=calls,
        throttled=throttled,
        live=live,
        reads=float(item_reads),
        waited=totals["waited"],
        failed=totals["failed"],
        stale=totals["stale"],
        cold_starts=int((~pop.warm).sum()),
        events=events,
    )


class _Pending:
    """Events scheduled inside the current look-ahead window (retries, short TTLs)."""

    def __init__(self) -> None:
        self.ids = np.zeros(0, np.int64)
        self.t = np.zeros(0)

    def add(self, ids: np.ndarray, t: np.ndarray) -> None:
        if len(ids):
            self.ids = np.concatenate([self.ids, ids])
            self.t = np.concatenate([self.t, t])

    def pop_before(self, t1: float) -> np.ndarray:
        if not len(self.ids):
            return self.ids
        now = self.t < t1
        if not now.any():
            return np.zeros(0, np.int64)
        out = self.ids[now]
        self.ids, self.t = self.ids[~now], self.t[~now]
        return out


def _can_stale(ch: _Chains, idx: np.ndarray, t: np.ndarray | float, policy: Policy) -> np.ndarray:
    """Reads whose expired entries are young enough to serve after the last retry fails."""
    earliest = ch.expiry[idx].min(axis=1)
    allowed: np.ndarray = (
        ch.single[idx]
        & (policy.max_stale > 0)
        & np.isfinite(earliest)
        & (t - earliest <= policy.max_stale)
    )
    return allowed


class _Backlog:
    """Chains of one API whose entry expired and whose last read failed.

    In an overload every read of such an item tries AWS again, so following each chain would
    cost one event per invocation. Instead the backlog draws how many of its chains are read in
    a step, runs those attempts as counts (by attempt number), and hands as many chains as got
    an answer back to the event queue, chosen at random.
    """

    def __init__(self, max_attempts: int) -> None:
        self.ids = np.zeros(0, np.int64)
        self.levels = np.zeros(max_attempts)

    def add(self, ids: np.ndarray) -> None:
        if len(ids):
            self.ids = np.concatenate([self.ids, ids])

    def drop_dead(self, alive: np.ndarray) -> None:
        if len(self.ids) and not alive.all():
            self.ids = self.ids[alive]

    def take(self, count: int, rng: np.random.Generator) -> np.ndarray:
        if count <= 0 or not len(self.ids):
            return np.zeros(0, np.int64)
        if count >= len(self.ids):
            out, self.ids = self.ids, np.zeros(0, np.int64)
            return out
        pos = np.unique(rng.integers(0, len(self.ids), count))
        keep = np.ones(len(self.ids), bool)
        keep[pos] = False
        out = self.ids[pos]
        self.ids = self.ids[keep]
        return out


def _retry_levels(levels: np.ndarray, admit: float, rng: np.random.Generator) -> np.ndarray:
    """Admit `admit` of the attempts, drawn at random across attempt numbers; the rejected move
    up one attempt (a retry in the next step) and those at the last attempt give up.
    Returns the rejected counts per attempt number."""
    counts = levels.astype(np.int64)
    total = int(counts.sum())
    take = min(total, max(0, int(admit)))
    if take >= total:
        rejected = np.zeros_like(levels)
    elif take == 0:
        rejected = counts.astype(np.float64)
    else:
        rejected = (counts - rng.multivariate_hypergeometric(counts, take)).astype(np.float64)
    levels[:] = 0.0
    levels[1:] = rejected[:-1]
    return rejected


def _settle_backlog(
    ch: _Chains,
    bl: _Backlog,
    answered: float,
    gave_up: float,
    t: float,
    fleet: Fleet,
    policy: Policy,
    rng: np.random.Generator,
    totals: dict[str, float],
) -> None:
    """Reads of backlog chains that gave up: stale where the policy allows, else failed."""
    if gave_up <= 0 or not len(bl.ids):
        return
    stale_share = float(_can_stale(ch, bl.ids, t, policy).mean())
    slots = float(ch.slots[bl.ids].mean())
    totals["stale"] += gave_up * stale_share
    totals["failed"] += gave_up * (1.0 - stale_share) * slots


def _restore(
    ch: _Chains,
    bl: _Backlog,
    answered: float,
    t: float,
    fleet: Fleet,
    policy: Policy,
    rng: np.random.Generator,
    win_end: float,
    pending: _Pending,
    totals: dict[str, float],
) -> None:
    """Backlog chains whose read got an answer: store their items and queue their next event."""
    idx = bl.take(round(answered), rng)
    if not len(idx):
        return
    exp = ch.expiry[idx]
    refill = (np.isfinite(exp) | (exp == -np.inf)) & (exp <= t)
    life = ch.ttl[idx][:, None] * (1.0 - policy.jitter * rng.random(exp.shape))
    done = np.full(len(idx), t + fleet.latency)
    ch.expiry[idx] = np.where(refill, done[:, None] + life, exp)
    totals["waited"] += float(ch.slots[idx].sum())
    _schedule_after_store(ch, idx, done, fleet, policy, rng)
    inside = idx[ch.next_t[idx] < win_end]
    pending.add(inside, ch.next_t[inside])


def _advance(
    ch: _Chains,
    due: np.ndarray,
    times: np.ndarray,
    ok: np.ndarray,
    phase: np.ndarray,
    fleet: Fleet,
    policy: Policy,
    rng: np.random.Generator,
    win_end: float,
    pending: _Pending,
    backlog: list[_Backlog],
    totals: dict[str, float],
    coarse: bool,
    busy: np.ndarray,
    svc_until: np.ndarray,
) -> None:
    """Apply the answers of one step's calls to their chains and count what handlers saw."""
    lam = fleet.per_sandbox_rate
    waited = failed = stale = 0.0
    # Answered: store the items, then draw the next event.
    idx = due[ok]
    if len(idx):
        t_ok, ph = times[ok], phase[ok]
        exp = ch.expiry[idx]
        refill = np.isfinite(exp) | (exp == -np.inf)
        refill &= (ph[:, None] != MISS) | (exp <= t_ok[:, None])
        life = ch.ttl[idx][:, None] * (1.0 - policy.jitter * rng.random(exp.shape))
        done = t_ok + fleet.latency
        ch.expiry[idx] = np.where(refill, done[:, None] + life, exp)
        waited += float(ch.slots[idx][ph == MISS].sum())
        ch.bo_fail[idx] = 0
        ch.bo_until[idx] = -np.inf
        blocking = (ph != REFRESH) & (ph != STALE_FIRST)
        np.maximum.at(busy, ch.sandbox[idx[blocking]], done[blocking])
        _schedule_after_store(ch, idx, done, fleet, policy, rng)
    # Throttled: back off and retry, or give up.
    bad = ~ok
    idx = due[bad]
    if len(idx):
        t_bad, ph = times[bad], phase[bad]
        attempt = ch.attempt[idx] + 1
        backoff = rng.random(len(idx)) * np.minimum(
            policy.backoff_cap, policy.backoff_base * 2.0**attempt
        )
        t_retry = t_bad + fleet.throttled_latency + backoff
        # A background load while the API is marked throttled makes one attempt, and so does a
        # read that found its key backing off (it had no value to serve: see _back_off).
        single_attempt = (
            (ph == STALE_FIRST)
            | ((ph == REFRESH) & ch.backs_off[idx] & (svc_until[ch.api[idx]] > t_bad))
            | ((ph == MISS) & ch.backs_off[idx] & (ch.first_try[idx] < ch.bo_until[idx]))
        )
        limit = np.where(single_attempt, 1, policy.max_attempts)
        retry = (attempt < limit) & (t_retry < ch.first_try[idx] + policy.timeout)
        ch.attempt[idx] = attempt
        ch.next_t[idx] = np.where(retry, t_retry, ch.next_t[idx])
        blocking = (ph != REFRESH) & (ph != STALE_FIRST)
        np.maximum.at(
            busy,
            ch.sandbox[idx[blocking]],
            np.where(retry, t_retry, t_bad + fleet.throttled_latency)[blocking],
        )
        backs = ~retry & ch.backs_off[idx]
        if backs.any():
            s_, f_ = _back_off(
                ch, idx[backs], t_bad[backs], ph[backs], fleet, policy, rng, svc_until
            )
            stale += s_
            failed += f_
        give = ~retry & ~ch.backs_off[idx]
        g, tg, pg = idx[give], t_bad[give], ph[give]
        if len(g):
            earliest = ch.expiry[g].min(axis=1)
            gap = rng.exponential(1.0 / lam, len(g)) if lam > 0 else np.full(len(g), np.inf)
            nxt = np.where(pg == PREFETCH, tg + fleet.throttled_latency, tg + gap)
            if coarse:
                # Large fleets: a failed refresh-ahead waits for expiry instead of retrying on
                # each later hit in its window (those retries meet a bucket that is empty anyway).
                nxt = np.where(pg == REFRESH, np.maximum(nxt, earliest + gap), nxt)
            new_phase = np.where((pg == REFRESH) & (nxt < earliest), REFRESH, MISS)
            miss = pg == MISS
            can_stale = miss & _can_stale(ch, g, tg, policy)
            stale += float(can_stale.sum())
            failed += float(ch.slots[g][miss & ~can_stale].sum())
            ch.phase[g] = new_phase
            ch.first_try[g] = nxt
            ch.attempt[g] = 0
            if coarse:
                ch.next_t[g] = np.where(miss, np.inf, nxt)
                for a in np.unique(ch.api[g[miss]]):
                    backlog[a].add(g[miss & (ch.api[g] == a)])
            else:
                ch.next_t[g] = nxt
    inside = due[ch.next_t[due] < win_end]
    pending.add(inside, ch.next_t[inside])
    totals["waited"] += waited
    totals["failed"] += failed
    totals["stale"] += stale


def _back_off(
    ch: _Chains,
    g: np.ndarray,
    tg: np.ndarray,
    pg: np.ndarray,
    fleet: Fleet,
    policy: Policy,
    rng: np.random.Generator,
    svc_until: np.ndarray,
) -> tuple[float, float]:
    """Loads that ended throttled, with throttle memory: back the keys off and mark their APIs.
    Keys with a stale value to serve: the reads until the back-off ends are counted stale without
    a call and the next event is the first read after it. Keys without: the next event is their
    next read, which makes one attempt if it falls in the back-off. Returns (stale, failed)."""
    lam = fleet.per_sandbox_rate
    t_end = tg + fleet.throttled_latency
    fails = np.minimum(ch.bo_fail[g] + 1, 64)  # as the extension: 2.0 ** 1024 overflows
    ch.bo_fail[g] = fails
    step = np.minimum(
        policy.throttle_backoff, policy.throttle_backoff_base * 2.0 ** (fails - 1).astype(float)
    )
    until = t_end + step * (0.5 + 0.5 * rng.random(len(g)))
    ch.bo_until[g] = until
    api = ch.api[g]
    for a in np.unique(api):
        svc_until[a] = max(svc_until[a], float(t_end[api == a].max()) + policy.service_memory)
    earliest = ch.expiry[g].min(axis=1)
    allowed = _can_stale(ch, g, tg, policy)
    slots = ch.slots[g]
    # The read that waited for this load (a miss) gets its answer now.
    waiting = pg == MISS
    stale = float((waiting & allowed).sum())
    failed = float(slots[waiting & ~allowed].sum())
    # Reads during the back-off served stale (a fresh entry's are hits until it expires).
    start = np.where(pg == REFRESH, np.maximum(earliest, t_end), t_end)
    n = rng.poisson(lam * np.maximum(0.0, until - start)) if lam > 0 else np.zeros(len(g))
    stale += float(n[allowed].sum())
    gap = rng.exponential(1.0 / lam, len(g)) if lam > 0 else np.full(len(g), np.inf)
    # Without a stale value, the first read that matters: a miss (one attempt while the back-off
    # lasts) once the entry has expired, or a refresh-ahead hit once the back-off is over.
    nxt = np.where(allowed, until, np.maximum(t_end, np.minimum(until, earliest))) + gap
    ch.phase[g] = np.where(ch.refresh_ahead[g] & (nxt < earliest), REFRESH, MISS)
    ch.next_t[g] = nxt
    ch.first_try[g] = nxt
    ch.attempt[g] = 0
    return stale, failed
