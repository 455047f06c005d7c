"""Accuracy of combining DaTtSs partials: BOT10/TOP10 via partials, percentiles via sketches, against exact.

Simulates one minute of 5-second partials (12 intervals) from several
processes and prints, per scenario, the exact BOT10/TOP10 of all samples, the
value `partials.combine` gives, and the relative error; then, when
`mondemand.sketch` is available, the error of the merged sketch's p50/p90/p99
against the exact nearest-rank percentiles.

    python benchmarks/bench_client_accuracy.py [--seed 1]
"""

from __future__ import annotations

import argparse
import math
import random
from collections.abc import Callable

from mondemand.client.partials import Partial, combine, tail_size
from mondemand.client.samples import nearest_rank

INTERVALS = 12  # 5-second partials in a minute

try:
    from mondemand.sketch import Sketch
except ImportError:  # the sketch is optional for this benchmark
    Sketch = None  # type: ignore[assignment,misc]

#: A process: (samples per interval, latency generator taking (rng, interval)).
ProcessSpec = tuple[int, Callable[[random.Random, int], int]]


def lognormal(median_ms: float, sigma: float = 0.5) -> Callable[[random.Random, int], int]:
    return lambda rng, _interval: max(1, round(rng.lognormvariate(math.log(median_ms), sigma)))


def spiky(median_ms: float, spike_ms: float, spike_interval: int) -> Callable[[random.Random, int], int]:
    normal, spike = lognormal(median_ms), lognormal(spike_ms, 0.2)
    return lambda rng, interval: spike(rng, interval) if interval == spike_interval else normal(rng, interval)


SCENARIOS: dict[str, list[ProcessSpec]] = {
    "10 alike processes, equal rate": [(200, lognormal(50))] * 10,
    "10 alike processes, rates 10..2000": [(rate, lognormal(50)) for rate in (10, 20, 50, 100, 200, 400, 800,
                                                                              1000, 1500, 2000)],
    "1 slow process (500 ms) of 10": [(200, lognormal(50))] * 9 + [(200, lognormal(500))],
    "1 slow, low-rate process of 10": [(1000, lognormal(50))] * 9 + [(20, lognormal(500))],
    "latency spike: 1 process, 1 interval": [(200, lognormal(50))] * 9 + [(200, spiky(50, 2000, 6))],
}


def exact_tails(values: list[int]) -> tuple[float, float]:
    ordered = sorted(values)
    k = tail_size(len(ordered))
    return sum(ordered[:k]) / k, sum(ordered[-k:]) / k


def run(name: str, specs: list[ProcessSpec], rng: random.Random) -> None:
    partials: list[Partial] = []
    everything: list[int] = []
    for rate, draw in specs:
        for interval in range(INTERVALS):
            values = [draw(rng, interval) for _ in range(rate)]
            everything += values
            sketch = None
            if Sketch is not None:
                sketch = Sketch(relative_accuracy=0.01)
                for v in values:
                    sketch.add(v)
            partials.append(Partial.from_samples(values, sketch))
    merged = combine(partials)
    bot, top = exact_tails(everything)
    print(f"{name}  ({len(specs)} processes, {len(everything):,} samples)")
    print(f"  BOT10 exact {bot:9.2f}  combined {merged.bot10:9.2f}  error {100 * (merged.bot10 - bot) / bot:+7.2f} %")
    print(f"  TOP10 exact {top:9.2f}  combined {merged.top10:9.2f}  error {100 * (merged.top10 - top) / top:+7.2f} %")
    if merged.sketch is not None:
        ordered = sorted(everything)
        cells = []
        for q in (0.5, 0.9, 0.99):
            exact = nearest_rank(ordered, q)
            estimate = merged.sketch.quantile(q)
            cells.append(f"p{round(q * 100)} {exact} vs {estimate:.1f} ({100 * (estimate - exact) / exact:+.2f} %)")
        print("  sketch: " + ", ".join(cells))


def main() -> None:
    """Run every scenario and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    if Sketch is None:
        print("mondemand.sketch is not available: percentile errors are not measured\n")
    for name, specs in SCENARIOS.items():
        run(name, specs, rng)


if __name__ == "__main__":
    main()
