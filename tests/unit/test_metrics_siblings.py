"""`/metrics` under `serve --processes N`: each count is this process's plus what its
siblings left in their snapshots (JSON round-tripped, as they travel through files)."""

from __future__ import annotations

import json

from imagedepot.api.metrics import Metrics


def line(page: str, series: str) -> str:
    found = [text for text in page.splitlines() if text.startswith(series + " ")]
    assert len(found) == 1, (series, page)
    return found[0].split()[-1]


def test_counters_and_histograms_add_up_over_the_siblings() -> None:
    mine, worker, other_api = Metrics(), Metrics(), Metrics()
    mine.http_requests.inc(port="api", code="2xx")
    other_api.http_requests.inc(3, port="api", code="2xx")
    other_api.http_requests.inc(port="registry", code="4xx")
    worker.builds.inc(outcome="available")
    worker.build_seconds.observe(3.0, outcome="available")
    mine.build_seconds.observe(0.5, outcome="available")
    snapshots = [json.loads(json.dumps(m.snapshot())) for m in (worker, other_api)]
    mine.siblings = lambda: snapshots

    page = mine.render()
    assert line(page, 'imagedepot_http_requests_total{code="2xx",port="api"}') == "4"
    assert line(page, 'imagedepot_http_requests_total{code="4xx",port="registry"}') == "1"
    assert line(page, 'imagedepot_cache_builds_total{outcome="available"}') == "1"
    seconds = "imagedepot_cache_build_seconds"
    assert line(page, f'{seconds}_bucket{{outcome="available",le="1"}}') == "1"
    assert line(page, f'{seconds}_bucket{{outcome="available",le="5"}}') == "2"
    assert line(page, f'{seconds}_count{{outcome="available"}}') == "2"
    assert line(page, f'{seconds}_sum{{outcome="available"}}') == "3.5"
    # Rendering the sum leaves the process's own counts as they were.
    mine.siblings = list
    assert line(mine.render(), 'imagedepot_http_requests_total{code="2xx",port="api"}') == "1"


def test_a_snapshot_with_other_buckets_or_not_a_mapping_is_left_out() -> None:
    mine = Metrics()
    mine.build_seconds.observe(2.0)
    foreign = {"build_seconds": [[[], [1, 1], 2.0]], "builds": [[[["outcome", "x"]], 5]]}
    mine.siblings = lambda: [foreign, ["not", "a", "snapshot"]]
    page = mine.render()
    assert line(page, "imagedepot_cache_build_seconds_count") == "1"  # other buckets: skipped
    assert line(page, 'imagedepot_cache_builds_total{outcome="x"}') == "5"
