"""A small web-app-like program instrumented with mondemand.client.

It serves fake requests for a few seconds and reports, mondemand style, to a
mondemand-server's lwes-udp listener on 127.0.0.1:20402, and DaTtSs style
partials from the same process. Run a server (or `mondemand-dump`) first to
see the events, then:

    python examples/webapp.py --seconds 5

Nothing needs to listen: UDP sends succeed either way.
"""

from __future__ import annotations

import argparse
import logging
import random
import time

from mondemand.client import Client, Process, process

DESTINATION = "udp://127.0.0.1:20402"
ENDPOINTS = {"/": 0.002, "/search": 0.010, "/checkout": 0.020}


def handle(client: Client, api: Process, path: str, rng: random.Random) -> int:
    """Serve one fake request and record it; returns the HTTP status."""
    start = time.time()
    time.sleep(ENDPOINTS[path] * rng.uniform(0.5, 2.0))
    status = 500 if rng.random() < 0.02 else 200
    elapsed_ms = round((time.time() - start) * 1000)
    client.increment("requests")
    client.increment(f"status_{status}")
    client.add_sample(f"latency_ms{path.replace('/', '_') or '_root'}", elapsed_ms)
    api.agg("query", f"{elapsed_ms}ms")
    api.agg("new", "1c")
    if status == 500:
        client.log("error", f"{path} failed: backend timeout")
        logging.getLogger("webapp").error("%s failed", path)
    if path == "/checkout":
        end = int(time.time() * 1000)
        client.perf(f"req-{rng.randrange(1 << 30)}", "checkout", int(start * 1000), end)
    return status


def main() -> None:
    """Serve fake traffic for --seconds, then flush and exit."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="how long to serve fake requests")
    parser.add_argument("--to", default=DESTINATION, help="transport URL (udp://host:port or http://host:port)")
    args = parser.parse_args()

    client = Client("webapp", context={"cluster": "demo"}, transports=[args.to], flush_interval=2,
                    process_stats=True)  # fmt: skip
    api = process("webapp_api", transports=[args.to], interval=1)
    client.annotation("webapp-start", "webapp example started", tags=["example"])
    rng = random.Random(7)
    served = 0
    deadline = time.monotonic() + args.seconds
    while time.monotonic() < deadline:
        handle(client, api, rng.choice(list(ENDPOINTS)), rng)
        served += 1
        api.agg("live", f"{rng.randint(10, 30)}g")
    client.trace("example", "demo-trace", "served fake traffic", requests=served)
    api.close()
    client.close()
    print(f"served {served} fake requests; sent {client.events_sent + api.events_sent} events to {args.to}"
          f" ({client.send_errors + api.send_errors} send errors)")


if __name__ == "__main__":
    main()
