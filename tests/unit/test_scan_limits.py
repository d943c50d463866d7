"""Politeness: the GCRA rate limiter (fake clock) and per-key caps (no sleeps)."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from relaycheck.scan.limits import ConnectRateLimiter, KeyedLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_rate_limiter_spaces_tokens() -> None:
    clock = Clock()
    limiter = ConnectRateLimiter(10, burst=1, clock=clock)
    assert limiter.reserve() == 0.0
    assert limiter.reserve() == pytest.approx(0.1)
    assert limiter.reserve(3) == pytest.approx(0.4)  # booked after the earlier ones
    clock.now += 10  # idle time does not pile up beyond the burst
    assert limiter.reserve() == 0.0
    assert limiter.reserve() == pytest.approx(0.1)


def test_rate_limiter_burst_and_average() -> None:
    clock = Clock()
    limiter = ConnectRateLimiter(100, burst=5, clock=clock)
    waits = [limiter.reserve() for _ in range(1000)]
    assert waits[:5] == pytest.approx([0.0] * 5, abs=1e-9)
    # 1000 tokens at 100/s: the last one is usable after ~10 s minus the burst
    assert waits[-1] == pytest.approx(1000 / 100 - 5 / 100)
    assert all(b >= a for a, b in itertools.pairwise(waits))


def test_unlimited() -> None:
    limiter = ConnectRateLimiter(0)
    assert all(limiter.reserve(3) == 0 for _ in range(10)) and limiter.taken == 30


def test_keyed_limiter_caps_each_key() -> None:
    async def scenario() -> tuple[int, int, int]:
        limiter = KeyedLimiter(2)
        inside: dict[str, int] = {"a": 0, "b": 0}
        peak: dict[str, int] = {"a": 0, "b": 0}
        gate = asyncio.Event()

        async def holder(key: str) -> None:
            async with limiter.hold(key):
                inside[key] += 1
                peak[key] = max(peak[key], inside[key])
                await gate.wait()
                inside[key] -= 1

        tasks = [asyncio.create_task(holder(k)) for k in "aaaaab"]
        for _ in range(5):
            await asyncio.sleep(0)  # let every task reach the limiter
        assert inside == {"a": 2, "b": 1}
        gate.set()
        await asyncio.gather(*tasks)
        return peak["a"], peak["b"], limiter.active_keys

    assert asyncio.run(scenario()) == (2, 1, 0)  # idle keys are forgotten


def test_keyed_limiter_survives_cancelled_waiters() -> None:
    async def scenario() -> int:
        limiter = KeyedLimiter(1)
        release = asyncio.Event()

        async def holder() -> None:
            async with limiter.hold("k"):
                await release.wait()

        first = asyncio.create_task(holder())
        await asyncio.sleep(0)
        waiting = [asyncio.create_task(holder()) for _ in range(3)]
        await asyncio.sleep(0)
        waiting[0].cancel()
        await asyncio.sleep(0)
        release.set()
        await asyncio.gather(first, *waiting[1:])
        with pytest.raises(asyncio.CancelledError):
            await waiting[0]
        return limiter.active_keys

    assert asyncio.run(scenario()) == 0


def test_zero_means_no_cap() -> None:
    async def scenario() -> int:
        limiter = KeyedLimiter(0)
        async with limiter.hold("x"), limiter.hold("x"):
            return limiter.active_keys

    assert asyncio.run(scenario()) == 0
