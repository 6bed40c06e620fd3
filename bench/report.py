"""Printing benchmark rounds and their summary the same way for every bench script."""

from __future__ import annotations

import statistics


def print_round(round_number: int, results: dict[str, list[float]]) -> None:
    print(
        f"round {round_number + 1}: "
        + ", ".join(f"{name} {times[-1]:.2f}s" for name, times in results.items()),
        flush=True,
    )


def print_summary(
    results: dict[str, list[float]], total_mb: float | None = None
) -> dict[str, float]:
    """Best and median of each contender; the best times, for the ratios the caller prints."""
    best = {name: min(times) for name, times in results.items()}
    median = {name: statistics.median(times) for name, times in results.items()}
    width = max(len(name) for name in results) + 1
    print("\nbest of rounds (median in brackets):")
    for name in results:
        rate = f"  {total_mb / best[name]:7.0f} MB/s" if total_mb else ""
        print(f"  {name:<{width}} {best[name]:6.2f}s  ({median[name]:.2f}s){rate}")
    return best
