from loranet.ratelimit import RateLimiter


def test_burst_then_steady_rate_per_client():
    now = [0.0]
    limiter = RateLimiter(rate=2.0, burst=3, clock=lambda: now[0])
    assert [limiter.allow("a") for _ in range(4)] == [True, True, True, False]
    assert limiter.allow("b")  # another client is not affected
    assert 0.4 < limiter.retry_after("a") <= 0.5
    now[0] += 0.5
    assert limiter.allow("a") and not limiter.allow("a")
    now[0] += 100
    assert sum(limiter.allow("a") for _ in range(10)) == 3  # never more than the burst


def test_bounded_memory():
    limiter = RateLimiter(rate=1.0, burst=1, max_clients=10)
    for i in range(1000):
        limiter.allow(i)
    assert len(limiter._buckets) == 10
