"""DaTtSs-style `process(...).agg(...)`: value parsing and partials sent to a real lwes-udp listener."""

from __future__ import annotations

import pytest
from mondemand.client import parse_value, process
from mondemand.client.partials import PARTIAL_CONTEXT_KEY, combine, from_stats


@pytest.mark.parametrize(("text", "parsed"), [("1c", (1, "c")), ("153ms", (153, "ms")), ("23g", (23, "g")),
                                              ("-4g", (-4, "g")), (" 7 ms ", (7, "ms"))])
def test_values_with_a_kind_suffix_parse(text, parsed):
    assert parse_value(text) == parsed


@pytest.mark.parametrize("text", ["1", "12s", "ms", "1.5ms", "1 c c", "", "0x10c", "12MS"])
def test_bad_suffix_or_number_is_a_value_error_naming_the_forms(text):
    with pytest.raises(ValueError, match=r"c \(counter.*ms \(timer.*g \(gauge"):
        parse_value(text)


def test_agg_rejects_bad_values_and_kind_changes_and_keeps_the_rest(udp):
    received, url = udp
    api = process("api", transports=[url], interval=3600)
    api.agg("query", "10ms")
    with pytest.raises(ValueError, match="'12x'"):
        api.agg("query", "12x")
    with pytest.raises(ValueError, match="'query' is a timer; '3c' would make it a counter"):
        api.agg("query", "3c")
    api.agg("query", "20ms")
    api.close()
    [raw] = received.wait(1)
    assert from_stats(raw.message)["query"].count == 2


def test_partials_from_two_processes_combine_to_the_exact_sums(udp):
    received, url = udp
    web = process("api", host="web1", transports=[url], interval=3600)
    other = process("api", host="web2", transports=[url], interval=3600)
    for i in range(1, 101):
        web.agg("query", f"{i}ms")
        web.agg("new", "1c")
    for i in range(1, 11):
        other.agg("query", f"{i * 100}ms")
    other.agg("live", "23g")
    web.close()
    other.close()
    msgs = [raw.message for raw in received.wait(2)]
    assert {m.context[PARTIAL_CONTEXT_KEY] for m in msgs} == {"3600000"}
    partials = [from_stats(m) for m in msgs]
    query = combine(p["query"] for p in partials)
    assert (query.count, query.sum, query.min, query.max) == (110, 5050 + 5500, 1, 1000)
    # web1: 100 samples, bottom 10 = 1..10 (mean 5.5), top 10 = 91..100 (95.5); web2: 10 samples, k = 1.
    assert query.bot10 == pytest.approx((100 * 5.5 + 10 * 100) / 110)
    assert query.top10 == pytest.approx((100 * 95.5 + 10 * 1000) / 110)
    assert partials[0]["new"].sum == 100
    assert partials[1]["live"].max == 23


def test_percentile_sketches_travel_with_the_partials_and_merge_across_processes(udp):
    from mondemand.sketch import Sketch

    received, url = udp
    fast = process("api", host="web1", transports=[url], interval=3600, percentiles=True)
    slow = process("api", host="web2", transports=[url], interval=3600, percentiles=True)
    for i in range(1, 901):
        fast.agg("query", f"{i}ms")
    for i in range(1, 101):
        slow.agg("query", f"{10_000 + i}ms")
    fast.close()
    slow.close()
    partials = [from_stats(raw.message, Sketch.from_text)["query"] for raw in received.wait(2)]
    merged = combine(partials)
    assert merged.sketch.count == 1000
    # All 1000 values: 1..900 then 10001..10100; the 0.95 quantile is among the slow ones, within 1 %.
    assert merged.sketch.quantile(0.95) == pytest.approx(10_050, rel=0.01)
    assert merged.sketch.quantile(0.5) == pytest.approx(500, rel=0.01)
