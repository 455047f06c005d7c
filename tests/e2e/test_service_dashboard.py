"""The dashboard in service mode, in Debian's headless Chromium: a key to sign in, one tenant's view per session.

Two tenants send the same prog_id and gauge (acme 500, globex 5) over signed
UDP. Without a session the page sends the browser to the login form; acme's
key shows acme's 500 and never globex's 5, globex's key the reverse; a wrong
key is refused; the admin key sees either tenant with `?tenant=`. The session
cookie is HttpOnly and SameSite=Strict and holds no key. The alert view shows
each tenant its own alerts copy's rules and series (acme's one rule, queue at
500; globex's two, queue at 5), and a silence lands in the tenant's own folder.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.parse

import pytest
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.common.by import By

from mondemand.lwes import encode
from mondemand.messages import Metric, MetricType, StatsMsg
from mondemand.signing import sign
from tests.backends.dashboard import dashboard_scenario as scenario
from tests.e2e.harness import free_port, wait_for
from tests.e2e.service_helpers import ADMIN, KEYS, ServiceServer, all_keys


@pytest.fixture
def served(tmp_path):
    port = free_port(socket.SOCK_STREAM)
    server = ServiceServer(tmp_path, extra_backends=f"""
[backend:dashboard]
type = dashboard
address = 127.0.0.1
port = {port}
push_interval = 100ms
alerts_url = http://127.0.0.1:@HTTP_PORT@/alerts
alerts_state_file = {tmp_path / "data" / "alerts.json"}
""", extra_routes="""
[route:dashboard]
events = MonDemand::StatsMsg, MonDemand::LogMsg
backends = dashboard
""")
    try:
        for tenant, value in (("acme", 500), ("globex", 5)):
            msg = StatsMsg("shop", "web1", {}, [Metric(MetricType.GAUGE, "queue", value)])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.sendto(sign(encode(msg.to_lwes()[0]), tenant, KEYS[tenant]["secret"].encode()),
                         ("127.0.0.1", server.udp))
        wait_for(lambda: server.status()["backends"]["dashboard"]["events_processed"] >= 2, what="the dashboard")
        yield server, port
    finally:
        assert server.stop() == 0, server.log()


def sign_in(driver, port: int, key: str) -> None:
    driver.get(f"http://127.0.0.1:{port}/")
    wait_for(lambda: driver.current_url.endswith("/login"), what="the login form")
    driver.find_element(By.ID, "key").send_keys(key)
    driver.find_element(By.ID, "sign-in").click()


def text_of(driver, element_id: str) -> str:
    """An element's text, or "" while the page that holds it is being replaced (a form post reloads it)."""
    try:
        return driver.find_element(By.ID, element_id).text
    except (NoSuchElementException, StaleElementReferenceException):
        return ""


def queue_values(driver) -> set[str]:
    """The queue cells' text; the live stream may replace a row while it is read, so read again then."""
    for _ in range(20):
        try:
            rows = driver.find_elements(By.CSS_SELECTOR, '#series tr[data-name="queue"][data-host="web1"] .value')
            return {row.text for row in rows}
        except StaleElementReferenceException:
            time.sleep(0.05)
    raise AssertionError("the queue rows kept changing under the reader")


def check_tenant_view(port: int, tenant: str, mine: str, theirs: str) -> None:
    """Sign in with the tenant's key in a fresh browser: its own value shows, the other tenant's never."""
    driver = scenario.chromium()
    try:
        sign_in(driver, port, KEYS[tenant]["bearer"])
        wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, '#processes tr[data-prog="shop"]'),
                 what=f"{tenant}'s program")
        driver.get(f"http://127.0.0.1:{port}/#prog=shop")
        assert wait_for(lambda: queue_values(driver), what=f"{tenant}'s queue row") == {mine}
        assert theirs not in queue_values(driver)
        cookies = driver.get_cookies()
        assert [c["name"] for c in cookies] == ["md_session"]
        assert cookies[0]["httpOnly"] and cookies[0]["sameSite"] == "Strict"
        assert all(key not in cookies[0]["value"] for key in all_keys())
        assert all(key not in driver.page_source for key in all_keys())
    finally:
        driver.quit()


def test_each_key_sees_only_its_tenant_and_the_admin_sees_any(served):
    server, port = served
    check_tenant_view(port, "acme", "500", "5")
    check_tenant_view(port, "globex", "5", "500")
    driver = scenario.chromium()
    try:
        sign_in(driver, port, "not-a-key")
        wait_for(lambda: "not valid" in text_of(driver, "login-error"), what="the refusal")
        assert not driver.get_cookies()
        sign_in(driver, port, ADMIN)
        wait_for(lambda: driver.get_cookies(), what="the admin session")
        for tenant, value in (("globex", "5"), ("acme", "500")):
            driver.get(f"http://127.0.0.1:{port}/?tenant={tenant}#prog=shop")
            assert wait_for(lambda v=value: queue_values(driver) == {v} and queue_values(driver),
                            what=f"the admin's view of {tenant}") == {value}
    finally:
        driver.quit()
    dashboard = server.status()["backends"]["dashboard"]
    assert dashboard["events_processed"] >= 2


def test_api_without_a_session_is_401_and_login_sets_a_strict_httponly_cookie(served):
    server, port = served
    status, _, _ = server.request(f"http://127.0.0.1:{port}/api/overview")
    assert status == 401
    body = urllib.parse.urlencode({"key": KEYS["acme"]["bearer"]}).encode()
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("POST", "/login", body=body, headers={"Content-Type": "application/x-www-form-urlencoded"})
    answer = conn.getresponse()
    cookie = answer.getheader("Set-Cookie")
    answer.read()
    assert answer.status == 303 and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert KEYS["acme"]["bearer"] not in cookie
    token = cookie.split(";", 1)[0]
    conn.request("GET", "/api/overview", headers={"Cookie": token})
    overview = conn.getresponse()
    text = overview.read().decode()
    assert overview.status == 200 and '"shop"' in text and all(k not in text for k in all_keys())
    conn.close()


def login(port: int, key: str) -> str:
    """The `md_session=TOKEN` cookie of a login with `key`."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("POST", "/login", body=urllib.parse.urlencode({"key": key}).encode(),
                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    answer = conn.getresponse()
    answer.read()
    conn.close()
    assert answer.status == 303
    return answer.getheader("Set-Cookie").split(";", 1)[0]


def alerts_doc(server, port: int, cookie: str, query: str = "") -> dict:
    status, _, text = server.request(f"http://127.0.0.1:{port}/api/alerts{query}", headers={"Cookie": cookie})
    assert status == 200, text
    return json.loads(text)


def queue_series(doc: dict) -> set[float]:
    return {s["value"] for s in doc["rules"]["queue"]["series"]}


def test_the_alert_view_shows_each_tenant_its_own_alerts(served):
    server, port = served
    acme, globex = login(port, KEYS["acme"]["bearer"]), login(port, KEYS["globex"]["bearer"])
    doc = wait_for(lambda: queue_series(d := alerts_doc(server, port, acme)) and d, what="acme's alerts")
    assert set(doc["rules"]) == {"queue"} and queue_series(doc) == {500.0}  # acme's alert_rules, its own value
    doc = wait_for(lambda: queue_series(d := alerts_doc(server, port, globex)) and d,
                   what="globex's alerts")
    assert set(doc["rules"]) == {"queue", "orders"} and queue_series(doc) == {5.0}
    admin = login(port, ADMIN)
    assert queue_series(alerts_doc(server, port, admin, "?tenant=acme")) == {500.0}
    assert queue_series(alerts_doc(server, port, admin, "?tenant=")) == set()  # no event came without a tenant
    status, _, _ = server.request(f"http://127.0.0.1:{port}/api/alerts")
    assert status == 401

    # A silence from acme's session lands beside acme's alerts state, read by acme's copy only.
    status, _, text = server.request(f"http://127.0.0.1:{port}/api/alerts/silence", method="POST",
                                     body=json.dumps({"rule": "queue", "series": None, "seconds": 600}).encode(),
                                     headers={"Cookie": acme, "Content-Type": "application/json"})
    assert status == 200, text
    assert (server.data / "acme" / "silences.json").exists()
    assert not (server.data / "globex" / "silences.json").exists() and not (server.data / "silences.json").exists()
    doc = wait_for(lambda: (d := alerts_doc(server, port, acme))["silences"]["silences"] and d, what="the silence")
    assert [x["rule"] for x in doc["silences"]["silences"]] == ["queue"]
    assert not alerts_doc(server, port, globex)["silences"]["silences"]

    # The page renders acme's rules, in a real browser.
    driver = scenario.chromium()
    try:
        sign_in(driver, port, KEYS["acme"]["bearer"])
        rows = wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, "#alert-rules tbody tr"), what="acme's rules")
        assert [row.get_attribute("data-rule") for row in rows] == ["queue"]
        assert rows[0].get_attribute("data-silenced") == "true"
        assert all(key not in driver.page_source for key in all_keys())
    finally:
        driver.quit()
    assert all(key not in answer for answer in server.answers for key in all_keys())
    assert "Bearer" not in server.log()
