"""LatencyHistogram's buckets follow Prometheus's "le": a value equal to a bound counts in it."""

from daemon.producer.counters import LatencyHistogram


def test_each_value_lands_in_the_first_bucket_whose_bound_is_not_below_it():
    hist = LatencyHistogram((0.001, 0.01, 0.1))
    for value in (0.0, 0.001, 0.0010001, 0.01, 0.05, 0.1, 0.2, 1e9):
        hist.observe(value)
    assert hist.buckets == [2, 2, 2, 2]  # le 0.001, le 0.01, le 0.1, +Inf
    assert hist.count == 8


def test_observe_times_weights_one_value():
    hist = LatencyHistogram((1.0,))
    hist.observe(0.5, times=7)
    assert hist.buckets == [7, 0] and hist.count == 7 and hist.total == 3.5
