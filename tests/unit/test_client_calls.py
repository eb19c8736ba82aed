"""The client's calls and their attempts without I/O: retries, failures, connection bookkeeping."""

from __future__ import annotations

import pytest
from secretcache_client import Client, ExtensionUnavailable, SecretNotFound, UpstreamError
from secretcache_client._attempts import (
    STALE,
    Attempt,
    Attempts,
    IdlePool,
    Starting,
    backoff,
    failure_outcome,
)
from secretcache_client._calls import get_parameter
from secretcache_client._protocol import Answer, MalformedResponse

NOT_READY = Answer(400, b"not ready to serve traffic", True)
OK = Answer(200, b'{"Parameter": {"Value": "v"}}', True)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FakeConnection:
    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True


def test_backoff_doubles_from_5_ms_to_100_ms() -> None:
    assert [backoff(n) for n in range(1, 8)] == [0.005, 0.01, 0.02, 0.04, 0.08, 0.1, 0.1]


def test_a_final_answer_ends_the_call_at_once() -> None:
    attempts = Attempts(1.0, None, clock=FakeClock())
    assert attempts.settle(OK) is OK
    error = Answer(404, b"{}", True)
    assert attempts.settle(error) is error  # errors are final too: never retried


def test_not_ready_and_starting_are_retried_with_backoff_until_the_timeout() -> None:
    clock = FakeClock()
    attempts = Attempts(0.1, None, clock=clock)
    delays = []
    outcomes: list[Answer | Starting] = [Starting("connection refused"), *[NOT_READY] * 4]
    with pytest.raises(ExtensionUnavailable, match=r"not ready .*\(5 attempts within 0.1 s\)"):
        for outcome in outcomes:
            assert attempts.budget() == pytest.approx(100.1 - clock.now)
            assert attempts.settle(outcome) is None
            delays.append(attempts.delay)
            clock.now += attempts.delay
    # 5 ms, 10, 20, 40; waiting 80 more would leave under 10 ms for the 6th attempt.
    assert delays == [0.005, 0.01, 0.02, 0.04]


def test_retries_caps_the_attempts() -> None:
    attempts = Attempts(60.0, 2, clock=FakeClock())
    assert attempts.settle(Starting("connection refused")) is None
    assert attempts.settle(Starting("connection refused")) is None
    with pytest.raises(ExtensionUnavailable, match="refused: is the extension running"):
        attempts.settle(Starting("connection refused"))


def test_a_stale_connection_is_retried_at_once_on_a_fresh_one_and_does_not_count() -> None:
    attempts = Attempts(1.0, 0, clock=FakeClock())
    assert attempts.settle(STALE) is None
    assert (attempts.delay, attempts.fresh, attempts.count) == (0.0, True, 0)
    with pytest.raises(ExtensionUnavailable):
        attempts.settle(Starting("connection reset"))
    assert not attempts.fresh


def test_budget_never_reaches_zero() -> None:
    clock = FakeClock()
    attempts = Attempts(1.0, None, clock=clock)
    clock.now += 5
    assert attempts.budget() == 0.001


@pytest.mark.parametrize(
    ("exc", "connected", "reused", "expected"),
    [
        (ConnectionRefusedError(), False, False, "connection refused"),
        (ConnectionResetError(), True, False, "connection reset"),
        (BrokenPipeError(), True, True, STALE),
        (ConnectionResetError(), True, True, STALE),
    ],
)
def test_failures_worth_a_retry(
    exc: BaseException, connected: bool, reused: bool, expected: object
) -> None:
    outcome = failure_outcome(exc, connected=connected, reused=reused, timeout=1.0)
    if isinstance(outcome, Starting):
        assert outcome.reason == expected
    else:
        assert outcome is expected


@pytest.mark.parametrize(
    ("exc", "connected", "error_type", "text"),
    [
        (TimeoutError(), False, "Timeout", "no answer from the extension within 2 s"),
        (TimeoutError(), True, "Timeout", "no answer from the extension within 2 s"),
        (OSError(101, "unreachable"), False, "ExtensionUnavailable", "cannot connect"),
        (OSError(5, "io"), True, "ExtensionUnavailable", "connection to the extension failed"),
        (MalformedResponse("bad status line"), True, "ExtensionUnavailable", "bad status line"),
    ],
)
def test_failures_that_end_the_call(
    exc: BaseException, connected: bool, error_type: str, text: str
) -> None:
    with pytest.raises(ExtensionUnavailable, match=text) as caught:
        failure_outcome(exc, connected=connected, reused=False, timeout=2.0)
    assert caught.value.error_type == error_type
    assert caught.value.status is None


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), ValueError("not ours")])
def test_other_exceptions_are_not_connection_failures(exc: BaseException) -> None:
    assert failure_outcome(exc, connected=True, reused=True, timeout=1.0) is None


def test_attempt_returns_a_kept_alive_connection_to_the_pool() -> None:
    pool: IdlePool[FakeConnection] = IdlePool(4)
    conn = FakeConnection()
    with Attempt(pool, fresh=False, timeout=1.0) as attempt:
        assert attempt.conn is None
        attempt.conn = conn
        attempt.answered(OK)
    assert attempt.outcome is OK
    assert pool.take() is conn and not conn.closed


def test_attempt_closes_a_connection_that_may_not_be_reused() -> None:
    pool: IdlePool[FakeConnection] = IdlePool(4)
    conn = FakeConnection()
    with Attempt(pool, fresh=False, timeout=1.0) as attempt:
        attempt.conn = conn
        attempt.answered(Answer(200, b"{}", keep_alive=False))
    assert conn.closed and pool.take() is None


def test_attempt_turns_a_failure_on_a_pooled_connection_into_stale() -> None:
    pool: IdlePool[FakeConnection] = IdlePool(4)
    pooled = FakeConnection()
    pool.put(pooled)
    with Attempt(pool, fresh=False, timeout=1.0) as attempt:
        assert attempt.conn is pooled
        raise ConnectionResetError
    assert attempt.outcome is STALE and pooled.closed


def test_fresh_attempt_skips_the_pool_and_interrupts_propagate() -> None:
    pool: IdlePool[FakeConnection] = IdlePool(4)
    pooled = FakeConnection()
    pool.put(pooled)
    opened = FakeConnection()
    with pytest.raises(KeyboardInterrupt), Attempt(pool, fresh=True, timeout=1.0) as attempt:
        assert attempt.conn is None
        attempt.conn = opened
        raise KeyboardInterrupt
    assert opened.closed  # the stream is out of step: never reused
    assert pool.take() is pooled


def test_pool_keeps_at_most_its_size() -> None:
    pool: IdlePool[FakeConnection] = IdlePool(1)
    first, second = FakeConnection(), FakeConnection()
    pool.put(first)
    pool.put(second)
    assert second.closed and pool.drain() == [first]


def test_call_turns_answers_into_results_and_typed_errors() -> None:
    call = get_parameter(Client(port=2773, token="tok"), "/app/hosts", transform="list")
    assert call.request.startswith(b"GET /systemsmanager/parameters/get?name=%2Fapp%2Fhosts&")
    assert b"X-Aws-Parameters-Secrets-Token: tok\r\n" in call.request
    assert call.result(Answer(200, b'{"Parameter": {"Value": "a,b"}}', True)) == ["a", "b"]
    with pytest.raises(SecretNotFound):
        call.result(Answer(404, b'{"errorType": "ParameterNotFound", "message": "no"}', True))
    with pytest.raises(UpstreamError):
        call.result(Answer(200, b"not json", True))


def test_arguments_are_checked_before_any_call_is_built() -> None:
    client = Client(port=2773)
    with pytest.raises(ValueError, match="version or label"):
        get_parameter(client, "/p", version=1, label="x")
    with pytest.raises(ValueError, match="transform"):
        get_parameter(client, "/p", transform="yaml")  # type: ignore[call-overload]
