"""CPU µs per datagram of signed LWES (mondemand/signing.py) against unsigned, in one run.

The load is varied as a server sees it (`bench_stats_decode.varied_datagrams`:
1000 hosts, 3 counters and 2 gauges each, values changing). Each candidate
handles the same list of distinct datagrams; CPU time (`time.process_time`)
of the best of `--rounds` rounds is reported, with events/s derived from it.

- listener unsigned: what lwes-udp does per datagram with `signatures = off`
  (one `RawEvent`);
- listener verified: with `signatures = required` (`DatagramGate.check`: find
  the `auth` attribute, HMAC-SHA256, window, replay memory, quota, strip; then
  the `RawEvent`);
- client sign: what `Client(key=...)` adds per datagram (`sign`).

    python benchmarks/bench_signing.py [--hosts 1000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from mondemand.listeners.udpauth import DatagramGate

from mondemand.envelope import RawEvent
from mondemand.signing import sign
from mondemand.tenants import Tenants, TenantSpec

sys.path.insert(0, str(Path(__file__).parent))
from bench_stats_decode import varied_datagrams

SECRET = b"bench-secret-of-the-tenant-0001"


def best(rounds: int, run: Callable[[], int]) -> float:
    """Lowest CPU seconds per item over `rounds` runs."""
    out = float("inf")
    for _ in range(rounds):
        start = time.process_time()
        n = run()
        out = min(out, (time.process_time() - start) / n)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    plain = varied_datagrams(args.hosts, rounds=5)
    with tempfile.TemporaryDirectory() as tmp:
        keys = Path(tmp) / "t.keys"
        keys.write_text(f"t hmac:{SECRET.decode()}\n")
        tenants = Tenants({"t": TenantSpec("t", keys, ())})
    now = int(time.time() * 1000)
    signed = [sign(d, "t", SECRET, now) for d in plain]

    def unsigned() -> int:
        for data in plain:
            RawEvent(data, now, "10.0.0.1", 4567, "udp")
        return len(plain)

    def verified() -> int:
        gate = DatagramGate(tenants, "required", 60.0, len(signed) + 1)  # fresh replay memory each round
        check = gate.check
        for data in signed:
            checked = check(data, now)
            raw = RawEvent(checked[0], now, "10.0.0.1", 4567, "udp")  # type: ignore[index]
            raw.tenant = checked[1]  # type: ignore[index]
        assert gate.verifier.verified == len(signed)
        return len(signed)

    def signing() -> int:
        for data in plain:
            sign(data, "t", SECRET, now)
        return len(plain)

    results = {"listener unsigned": best(args.rounds, unsigned), "listener verified": best(args.rounds, verified),
               "client sign": best(args.rounds, signing)}
    size = sum(map(len, plain)) / len(plain)
    print(f"{len(plain)} distinct datagrams, {size:.0f} bytes on average (+{len(signed[0]) - len(plain[0])} signed)")
    for name, seconds in results.items():
        print(f"{name:20s} {seconds * 1e6:7.2f} µs CPU per datagram  {1 / seconds:12,.0f} /s")
    extra = results["listener verified"] - results["listener unsigned"]
    print(f"verification adds    {extra * 1e6:7.2f} µs per datagram "
          f"({results['listener verified'] / results['listener unsigned']:.1f}x the unsigned listener's cost)")


if __name__ == "__main__":
    main()
