"""The Prometheus text format of the process metrics."""

from __future__ import annotations

from imagedepot.api.metrics import Counter, Histogram, Metrics, gauge_lines


def test_counters_histograms_and_gauges_render_as_prometheus_reads_them() -> None:
    counter = Counter("x_total", "Things.")
    counter.inc(port="api", code="2xx")
    counter.inc(2, code="2xx", port="api")
    counter.inc(code='say "hi"\n', port="api")
    assert counter.render() == [
        "# HELP x_total Things.",
        "# TYPE x_total counter",
        'x_total{code="2xx",port="api"} 3',
        'x_total{code="say \\"hi\\"\\n",port="api"} 1',
    ]
    histogram = Histogram("d_seconds", "Durations.", (1, 10))
    for value in (0.5, 3, 30):
        histogram.observe(value)
    assert histogram.render()[2:] == [
        'd_seconds_bucket{le="1"} 1',
        'd_seconds_bucket{le="10"} 2',
        'd_seconds_bucket{le="+Inf"} 3',
        "d_seconds_sum 33.5",
        "d_seconds_count 3",
    ]
    assert gauge_lines("g", "Gauge.", [((("s", "a"),), 2), ((), 1.5)])[2:] == [
        'g{s="a"} 2',
        "g 1.5",
    ]
    page = Metrics().render([gauge_lines("g", "Gauge.", [((), 0)])])
    assert page.startswith("# HELP g Gauge.\n")
    assert page.endswith("\n")
    assert "# TYPE imagedepot_cache_build_seconds histogram" in page
