import pytest

from imagedepot.api.limits import AuthFailureLimiter, RateLimiter
from imagedepot.domain.errors import RateLimited


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_is_allowed_then_refused_then_refilled() -> None:
    clock = FakeTime()
    limiter = RateLimiter(rate=2, burst=3, clock=clock)
    for _ in range(3):
        limiter.check("a")
    with pytest.raises(RateLimited) as refused:
        limiter.check("a")
    assert refused.value.retry_after == 1
    limiter.check("b")  # buckets are per credential
    clock.now += 0.5
    limiter.check("a")
    with pytest.raises(RateLimited):
        limiter.check("a")


def test_rate_zero_turns_the_limit_off() -> None:
    limiter = RateLimiter(rate=0, burst=1, clock=FakeTime())
    for _ in range(1000):
        limiter.check("a")


def test_failed_authentications_cut_an_address_off_until_forgiven() -> None:
    clock = FakeTime()
    failures = AuthFailureLimiter(rate=0.5, burst=2, clock=clock)
    for _ in range(5):
        failures.check("10.0.0.1")  # looking never spends
    failures.failed("10.0.0.1")
    failures.check("10.0.0.1")
    failures.failed("10.0.0.1")
    with pytest.raises(RateLimited) as refused:
        failures.check("10.0.0.1")
    assert "failed authentications" in refused.value.message
    assert refused.value.retry_after == 2
    failures.failed("10.0.0.1")  # failing again while cut off never raises
    failures.check("10.0.0.2")  # per address
    clock.now += 2
    failures.check("10.0.0.1")
    off = AuthFailureLimiter(rate=0, burst=1)
    for _ in range(10):
        off.failed("anyone")
    off.check("anyone")
