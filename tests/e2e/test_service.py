"""Service mode end to end: two tenants with the same prog_id and metric names, one real server.

Over signed UDP (the client library), DaTtSs `PUT /agg` (a client written
here against DaTtSs's JSON) and lwes-http with a Bearer key, each tenant must
see only its own data in the stats and log files, the RRD files, the agg
summaries and the alerts; a forged, replayed, expired, unsigned or over-quota
event and a wrong key are each refused, counted, and stored nowhere; no key
appears in the log, the data directory or any HTTP answer; SIGHUP takes a new
key without a restart.
"""

from __future__ import annotations

import http.client
import json
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from mondemand.lwes import encode
from mondemand.messages import LogLine, LogMsg, Metric, MetricType, Priority, StatsMsg
from mondemand.signing import sign
from tests.e2e.harness import check_config, free_port, wait_for
from tests.e2e.service_helpers import (
    ADMIN,
    KEYS,
    ServiceServer,
    all_keys,
    dattss_body,
    dattss_partial,
    files_text,
    sha,
)

REPO = Path(__file__).resolve().parents[2]


def gauge_event(prog: str, name: str, value: int, host: str = "web1") -> bytes:
    return encode(StatsMsg(prog, host, {}, [Metric(MetricType.GAUGE, name, value)]).to_lwes()[0])


def send(data: bytes, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(data, ("127.0.0.1", port))


def rrd_last(path: Path) -> float:
    out = subprocess.run(["rrdtool", "lastupdate", str(path)], capture_output=True, text=True, check=True).stdout
    return float(out.strip().splitlines()[-1].split(":", 1)[1].split()[0])


@pytest.fixture
def server(tmp_path):
    srv = ServiceServer(tmp_path)
    try:
        yield srv
    finally:
        code = srv.stop()
        assert code == 0, srv.log()


def test_two_tenants_see_only_their_own_data_and_bad_input_is_refused_and_counted(server):
    base = f"http://127.0.0.1:{server.dattss}"
    # Signed UDP: the same prog_id, host and metric names for both tenants.
    for tenant, queue, orders in (("acme", 500, 111), ("globex", 5, 222)):
        msg = StatsMsg("shop", "web1", {}, [Metric(MetricType.GAUGE, "queue", queue),
                                            Metric(MetricType.COUNTER, "orders", orders)])
        send(sign(encode(msg.to_lwes()[0]), tenant, KEYS[tenant]["secret"].encode()), server.udp)
    # DaTtSs partials, and one log line each over lwes-http with a Bearer key.
    for tenant, values in (("acme", [10, 20, 30]), ("globex", [1000, 2000, 3000, 4000])):
        body = dattss_body({"ms": [dattss_partial("ms", "query", values)]})
        status, _, answer = server.request(f"{base}/agg?auth={KEYS[tenant]['bearer']}", method="PUT", body=body)
        assert (status, json.loads(answer)) == (200, {"ok": True, "partials": 1})
        status, _, _ = server.request(f"{base}/process?auth={KEYS[tenant]['bearer']}&process=api", method="PUT")
        assert status == 200
        log = LogMsg("shop", "web1", {}, [LogLine("app.py", 1, Priority.ERROR, f"{tenant}-only log line")])
        status, _, _ = server.request(f"http://127.0.0.1:{server.ingest}/events", method="POST",
                                      body=encode(log.to_lwes()), key=KEYS[tenant]["bearer"])
        assert status == 202

    # Refused: each kind once, each with a marker metric that must be stored nowhere.
    secret = KEYS["acme"]["secret"].encode()
    now = int(time.time() * 1000)
    send(sign(gauge_event("shop", "forged_marker", 1), "acme", b"not-the-secret-at-all"), server.udp)
    send(sign(gauge_event("shop", "unknown_marker", 1), "nobody", secret), server.udp)
    send(sign(gauge_event("shop", "expired_marker", 1), "acme", secret, now - 600_000), server.udp)
    send(gauge_event("shop", "unsigned_marker", 1), server.udp)
    replayed = sign(gauge_event("shop", "replay_marker", 7), "acme", secret)
    send(replayed, server.udp)
    send(replayed, server.udp)
    tampered = bytearray(sign(gauge_event("shop", "tamper_marker", 1), "acme", secret))
    tampered[20] ^= 1
    send(bytes(tampered), server.udp)
    body = dattss_body({"c": [dattss_partial("c", "wrongkey_marker", [1])]})
    for url in (f"{base}/agg?auth=wrong-key", f"{base}/agg"):
        status, headers, _ = server.request(url, method="PUT", body=body)
        assert status == 401 and "Bearer" in headers["WWW-Authenticate"]
    status, _, _ = server.request(f"http://127.0.0.1:{server.ingest}/events", method="POST",
                                  body=gauge_event("shop", "http_wrongkey_marker", 1), key="wrong")
    assert status == 401
    bad = dattss_partial("c", "badbody_marker", [1])
    del bad["cnt"]
    for body in (b"{not json", dattss_body({"c": [bad]})):  # a bad partial refuses the whole body
        status, _, answer = server.request(f"{base}/agg?auth={KEYS['acme']['bearer']}", method="PUT", body=body)
        assert status == 400 and "error" in json.loads(answer)
    # Over quota: the tiny tenant may send 2 events per second.
    tiny = KEYS["tiny"]
    for i in range(10):
        send(sign(gauge_event("shop", f"burst{i}", i), "tiny", tiny["secret"].encode()), server.udp)
    answers = [server.request(f"{base}/agg?auth={tiny['bearer']}", method="PUT",
                              body=dattss_body({"c": [dattss_partial("c", f"put{i}", [1])]}))
               for i in range(4)]
    refused = [a for a in answers if a[0] == 429]
    assert refused and all(int(a[1]["Retry-After"]) >= 1 for a in refused)

    signed = wait_for(lambda: (c := server.listener("signed"))["received"] == 19 and c, what="19 datagrams read")
    assert {k: signed[k] for k in ("verified", "bad_signature", "unknown_key", "expired", "unsigned", "replayed")} \
        == {"verified": 13, "bad_signature": 2, "unknown_key": 1, "expired": 1, "unsigned": 1, "replayed": 1}
    assert signed["over_quota"] >= 7  # 10 in a burst against a bucket of 2
    dattss = server.listener("dattss")
    assert dattss["unauthorized"] == 2 and dattss["over_quota"] == len(refused) and dattss["bad_request"] == 2
    assert dattss["partials"] == 2 + 4 - len(refused) and dattss["process_polls"] == 2
    assert server.listener("ingest")["unauthorized"] == 1
    tenants = server.status()["tenants"]
    assert tenants["tiny"]["over_quota"] >= 7 + len(refused)
    print(f"\nrefused/accepted: signed={signed} dattss={dattss} ingest={server.listener('ingest')}")

    data = server.data
    wait_for(lambda: server.status()["backends"]["alerts@globex"]["events_processed"] >= 2, what="globex's alerts")
    # Alerts belong to a tenant: acme's copy sees 500 (its own), globex's only 5; each needs its key.
    alert_url = "http://127.0.0.1:{}/tenant/{}/alerts"
    status, _, text = server.request(alert_url.format(server.http, "acme"), key=KEYS["acme"]["bearer"])
    assert status == 200
    values = {s["value"] for s in json.loads(text)["rules"]["queue"]["series"]}
    assert values == {500.0} and set(json.loads(text)["rules"]) == {"queue"}  # acme's alert_rules
    status, _, text = server.request(alert_url.format(server.http, "globex"), key=KEYS["globex"]["bearer"])
    assert {s["value"] for s in json.loads(text)["rules"]["queue"]["series"]} == {5.0}
    assert set(json.loads(text)["rules"]) == {"queue", "orders"}
    assert server.request(alert_url.format(server.http, "acme"), key=KEYS["globex"]["bearer"])[0] == 401
    assert server.request(f"http://127.0.0.1:{server.http}/alerts")[0] == 401
    assert server.request(f"http://127.0.0.1:{server.http}/status", key=KEYS["acme"]["bearer"])[0] == 401
    assert server.request(f"http://127.0.0.1:{server.http}/metrics")[0] == 401
    status, _, text = server.request(f"http://127.0.0.1:{server.http}/alerts", key=ADMIN)
    assert status == 200 and json.loads(text)["rules"]["queue"]["series"] == []  # no event came without a tenant
    server.status()
    wait_for(lambda: (data / "acme" / "alerts.json").exists() and (data / "globex" / "alerts.json").exists(),
             what="each tenant's alert state file")

    # Each tenant's own files, under its own folder.
    # (After a clean stop: the partials' minute roll-up and the agg intervals are written by then.)
    wait_for(lambda: "\tall\t" in files_text(data / "stats" / "acme") and "\tall\t" in files_text(data / "stats" /
                                                                                                  "globex"),
             timeout=20, what="the agg summaries of both tenants")
    assert server.stop() == 0, server.log()
    acme, globex = files_text(data / "stats" / "acme"), files_text(data / "stats" / "globex")
    assert "\torders\t111" in acme and "\t222" not in acme
    assert "\torders\t222" in globex and "\t111" not in globex
    assert "\tqueue\t500" in acme and "\tqueue\t5\t" in globex and "\tqueue\t500" not in globex
    # The DaTtSs partials landed as each tenant's partial statset (count 3 vs 4), and agg summarised them apart.
    assert "api\tcount\tquery\t3" in acme and "api\tcount\tquery\t4" in globex
    assert "api\tcount\tquery\t4" not in acme and "api\tcount\tquery\t3" not in globex
    agg_acme = [line for line in acme.splitlines() if "\tall\t" in line and "\tqueue\t" in line]
    agg_globex = [line for line in globex.splitlines() if "\tall\t" in line and "\tqueue\t" in line]
    assert agg_acme and all("\t5\t" not in line for line in agg_acme)
    assert agg_globex and all("500" not in line for line in agg_globex)
    logs = {t: files_text(data / "logs" / t) for t in ("acme", "globex")}
    assert "acme-only" in logs["acme"] and "globex-only" not in logs["acme"]
    assert "globex-only" in logs["globex"] and "acme-only" not in logs["globex"]
    # RRD: the same file names, each tenant's own value.
    for tenant, value in (("acme", 500.0), ("globex", 5.0)):
        assert rrd_last(data / "rrd" / tenant / "shop" / "queue" / "shop-gauge-queue-web1.rrd") == value
    assert not any(p for p in (data / "rrd").iterdir() if p.is_file())  # nothing outside a tenant's folder
    # Nothing refused was stored anywhere; the tiny tenant kept at most what its quota let through.
    everything = files_text(data)
    for marker in ("forged_marker", "unknown_marker", "expired_marker", "unsigned_marker", "tamper_marker",
                   "wrongkey_marker", "http_wrongkey_marker", "badbody_marker"):
        assert marker not in everything
    assert everything.count("\tweb1\tshop\tgauge\treplay_marker\t7") == 1  # the first copy, once (not the replay)
    tiny_text = files_text(data / "stats" / "tiny")
    stored = {f"burst{i}" for i in range(10) if f"\tburst{i}\t" in tiny_text}
    assert 1 <= len(stored) == 10 - signed["over_quota"]

    # No key, secret or key hash in the log, the data directory or any HTTP answer.
    text = server.log() + everything + "\n".join(server.answers)
    for secret_text in all_keys():
        assert secret_text not in text
        assert sha(secret_text).removeprefix("sha256:") not in text


def test_sighup_reads_the_keys_files_again_and_a_broken_file_keeps_the_old_keys(server):
    url = f"http://127.0.0.1:{server.dattss}/agg?auth="
    body = dattss_body({"c": [dattss_partial("c", "rotated", [1])]})
    new_key = "acme-rotated-key-4c2e8a6f"
    assert server.request(url + new_key, method="PUT", body=body)[0] == 401
    keys_file = server.tmp / "keys" / "acme.keys"
    keys_file.write_text(keys_file.read_text() + f"acme-web2 {sha(new_key)}\n")
    server.signal(signal.SIGHUP)
    wait_for(lambda: server.request(url + new_key, method="PUT", body=body)[0] == 200, what="the new key")
    assert server.request(url + KEYS["acme"]["bearer"], method="PUT", body=body)[0] == 200
    keys_file.write_text(keys_file.read_text() + "this line is broken\n")
    server.signal(signal.SIGHUP)
    wait_for(lambda: "keys not reloaded" in server.log(), what="the logged problem")
    assert server.request(url + new_key, method="PUT", body=body)[0] == 200  # the old table stays
    assert "acme.keys:4" in server.log() and new_key not in server.log()


def test_check_refuses_bad_tenant_config_naming_file_section_and_key(tmp_path):
    (tmp_path / "bad.keys").write_text("web sha256:1234\n")
    config = tmp_path / "routes.ini"
    config.write_text(f"""
[tenant:a]
keys_file = bad.keys
[tenant:b]
keys = web=hmac:secretsecretsecret
[tenant:c]
max_events_per_second = lots
keys = x=sha256:{"0" * 64}
[tenant:d]
keys = y=sha256:{"1" * 64}
alert_rules = nosuchrule
[listener:u]
type = lwes-udp
port = 0
signatures = sometimes
[backend:s]
type = sink
[route:r]
events = *
backends = s
""")
    result = check_config(config)
    assert result.returncode == 2, result.stderr
    assert "routes.ini: [tenant:a] keys_file: " in result.stderr and "bad.keys:1:" in result.stderr
    assert "routes.ini: [tenant:b] keys: key web: hmac secrets belong in a keys_file" in result.stderr
    assert "routes.ini: [tenant:c] max_events_per_second:" in result.stderr
    assert "routes.ini: [listener:u] signatures:" in result.stderr
    assert "routes.ini: [tenant:d] alert_rules: no [alert:nosuchrule] section" in result.stderr
    assert "secretsecretsecret" not in result.stderr
    config.write_text("""
[listener:u]
type = lwes-udp
port = 0
signatures = required
[backend:s]
type = sink
[route:r]
events = *
backends = s
""")
    result = check_config(config)
    assert result.returncode == 2 and "[listener:u] signatures: needs [tenant:NAME]" in result.stderr


def test_the_service_example_passes_check_from_the_repository_root():
    result = check_config("examples/service.ini", cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert "listener dattss: dattss" in result.stdout and "tenant acme" in result.stdout


def test_without_worker_processes_each_tenant_keeps_its_own_agg_too(tmp_path):
    server = ServiceServer(tmp_path, workers=False)
    try:
        for tenant, value in (("acme", 40), ("globex", 4000)):
            send(sign(gauge_event("shop", "queue", value), tenant, KEYS[tenant]["secret"].encode()), server.udp)
        wait_for(lambda: all("\tall\t" in files_text(server.data / "stats" / t) for t in ("acme", "globex")),
                 timeout=20, what="both tenants' agg summaries")
    finally:
        assert server.stop() == 0, server.log()
    acme, globex = files_text(server.data / "stats" / "acme"), files_text(server.data / "stats" / "globex")
    assert "\tall\tshop\tsum\tqueue\t40\t" in acme and "4000" not in acme
    assert "\tall\tshop\tsum\tqueue\t4000\t" in globex and "\t40\t" not in globex


def test_a_notification_shared_by_two_tenants_names_the_tenant(tmp_path):
    from tests.backends.alerts.alert_helpers import WebhookReceiver, smtp_server

    with WebhookReceiver() as hook, smtp_server() as (smtp_port, mails):
        # globex and tiny evaluate every rule (no alert_rules): one rule and two notifiers serve both.
        srv = ServiceServer(tmp_path, extra_backends=f"""
[alert:shared]
metric = shop:depth
above = 1
notify = hook, mail

[notifier:hook]
type = webhook
url = {hook.url}
retry_delay = 100ms

[notifier:mail]
type = smtp
host = 127.0.0.1
port = {smtp_port}
from = mondemand@example.org
to = ops@example.org
""")
        try:
            for tenant in ("globex", "tiny"):
                send(sign(gauge_event("shop", "depth", 9), tenant, KEYS[tenant]["secret"].encode()), srv.udp)
            wait_for(lambda: len(hook.received) == 2 and len(mails) == 2, what="two webhooks and two mails")
        finally:
            assert srv.stop() == 0, srv.log()
    assert sorted(doc["tenant"] for doc in hook.received) == ["globex", "tiny"]
    assert {doc["alert"] for doc in hook.received} == {"shared"}
    subjects = sorted(str(msg["Subject"]).strip() for _, _, msg in mails)
    assert [s.split(": ")[0] for s in subjects] == ["[mondemand] FIRING [globex] shared",
                                                    "[mondemand] FIRING [tiny] shared"]
    bodies = [msg.get_content() for _, _, msg in mails]
    assert sorted(line for body in bodies for line in body.splitlines() if line.startswith("tenant: ")) == \
        ["tenant: globex", "tenant: tiny"]
    assert all(key not in json.dumps(hook.received) + "".join(bodies) for key in all_keys())


def test_a_tenants_own_port_stamps_its_events_and_prometheus_labels_the_tenant(tmp_path):
    acme_udp, tiny_udp, globex_statsd, tiny_statsd = free_port(), free_port(), free_port(), free_port()
    prom = free_port(socket.SOCK_STREAM)
    srv = ServiceServer(tmp_path, extra_backends=f"""
[listener:acme-port]
type = lwes-udp
address = 127.0.0.1
port = {acme_udp}
tenant = acme

[listener:tiny-port]
type = lwes-udp
address = 127.0.0.1
port = {tiny_udp}
tenant = tiny

[listener:globex-statsd]
type = statsd
address = 127.0.0.1
port = {globex_statsd}
flush_interval = 200ms
tenant = globex

[listener:tiny-statsd]
type = statsd
address = 127.0.0.1
port = {tiny_statsd}
flush_interval = 200ms
tenant = tiny

[backend:prom]
type = prometheus
address = 127.0.0.1
port = {prom}
""", extra_routes="""
[route:prom]
events = MonDemand::StatsMsg
backends = prom
""")
    try:
        send(gauge_event("shop", "portq", 42), acme_udp)  # unsigned: the port says whose it is
        send(b"shop.portq:7|g", globex_statsd)
        for i in range(10):  # tiny may send 2 events a second, on its own port too
            send(gauge_event("shop", f"tinyport{i}", i), tiny_udp)
        wait_for(lambda: srv.listener("tiny-port")["received"] == 10, what="tiny's datagrams")
        assert srv.listener("tiny-port")["over_quota"] >= 7
        assert "over_quota" not in srv.listener("acme-port")  # no quota: the plain (compiled) receive loop
        # statsd on a tenant port: one flush of ten programs is ten events, and tiny's bucket (2/s) is shared
        send("\n".join(f"tinyd{i}.depth:{i}|g" for i in range(10)).encode(), tiny_statsd)
        statsd = wait_for(lambda: (c := srv.listener("tiny-statsd"))["events"] + c.get("over_quota", 0) == 10 and c,
                          what="tiny's statsd flush")
        assert statsd["over_quota"] >= 7, statsd
        wait_for(lambda: len(tiny_programs(srv.data / "stats" / "tiny")) == statsd["events"],
                 what="tiny's admitted statsd programs on disk")
        wait_for(lambda: "\tportq\t42" in files_text(srv.data / "stats" / "acme")
                 and "\tportq\t7" in files_text(srv.data / "stats" / "globex"), what="both tenants' portq")
        assert "portq" not in files_text(srv.data / "stats" / "globex").replace("\tportq\t7", "")
        untenanted = [p for p in (srv.data / "stats").iterdir() if p.name not in srv_tenants()]
        assert all("portq" not in files_text(p) for p in untenanted)

        url = f"http://127.0.0.1:{prom}/metrics"
        assert srv.request(url)[0] == 401
        assert srv.request(url, key=KEYS["acme"]["bearer"])[0] == 401  # not an admin: it would see globex's too
        text = wait_for(lambda: (t := srv.request(url, key=ADMIN)[2]).count("portq{") >= 2 and t,
                        what="both tenants' portq in /metrics")
        lines = sorted(line for line in text.splitlines() if line.startswith(("portq{", "mondemand_portq{")))
        assert any('tenant="acme"' in line and line.endswith(" 42.0") for line in lines), lines
        assert any('tenant="globex"' in line and line.endswith(" 7.0") for line in lines), lines
    finally:
        assert srv.stop() == 0, srv.log()


def tiny_programs(root) -> set[str]:
    """The `tinydN` programs with a stats file under `root` (`<root>/YYYY/MM/DD/<prog_id>/<host>`)."""
    return {p.parent.name for p in root.rglob("*") if p.is_file() and p.parent.name.startswith("tinyd")}


def srv_tenants() -> set[str]:
    return {"acme", "globex", "tiny", "ops"}


def test_a_tenant_port_must_name_a_tenant_and_cannot_also_take_signatures(tmp_path):
    config = tmp_path / "routes.ini"
    config.write_text(f"""
[tenant:acme]
keys = web={sha("k" * 20)}

[listener:a]
type = lwes-udp
port = 0
tenant = nobody

[listener:b]
type = lwes-udp
port = 0
tenant = acme
signatures = required

[listener:c]
type = statsd
port = 0
tenant = nobody

[backend:out]
type = print
path = {tmp_path}/out.txt

[route:all]
events = *
backends = out
""")
    result = check_config(config)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert "error: routes.ini: [listener:a] tenant: no [tenant:nobody] section" in lines
    assert "error: routes.ini: [listener:b] tenant: excludes signatures: a signed event names its own tenant" in lines
    assert "error: routes.ini: [listener:c] tenant: no [tenant:nobody] section" in lines


def test_put_process_is_a_long_poll_that_keeps_the_process_up_and_never_holds_the_server_stop(tmp_path):
    """DaTtSs clients poll PUT /process again as soon as it is answered: it is held `process_poll`."""
    poll_port, long_port = free_port(socket.SOCK_STREAM), free_port(socket.SOCK_STREAM)
    srv = ServiceServer(tmp_path, extra_backends=f"""
[listener:dattss-poll]
type = dattss
address = 127.0.0.1
port = {poll_port}
process_poll = 2s

[listener:dattss-long]
type = dattss
address = 127.0.0.1
port = {long_port}
process_poll = 30s
""")
    answers: list[tuple[int, float]] = []

    def poll(port: int = poll_port) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        started = time.monotonic()
        try:
            conn.request("PUT", f"/process?auth={KEYS['acme']['bearer']}&process=api", body=b"")
            answers.append((conn.getresponse().status, time.monotonic() - started))
        except OSError:
            answers.append((0, time.monotonic() - started))
        finally:
            conn.close()

    try:
        first = threading.Thread(target=poll)
        first.start()
        listener = wait_for(lambda: (c := srv.listener("dattss-poll"))["processes_polling"] == 1 and c,
                            what="the held poll")
        assert listener["processes_up"] == 1 and not answers
        first.join(10)
        status, took = answers[0]
        assert status == 200 and took >= 1.9
        listener = srv.listener("dattss-poll")
        assert (listener["processes_polling"], listener["processes_up"], listener["process_polls"]) == (0, 1, 1)
        second = threading.Thread(target=poll, args=(long_port,))  # held 30 s, unless the server stops
        second.start()
        wait_for(lambda: srv.listener("dattss-long")["processes_polling"] == 1, what="the long poll")
        stopping = time.monotonic()
    finally:
        assert srv.stop() == 0, srv.log()
    assert time.monotonic() - stopping < 10
    second.join(10)
    assert len(answers) == 2 and answers[1][1] < 15  # cut by the stop, not answered after 30 s
    assert "Traceback" not in srv.log()
