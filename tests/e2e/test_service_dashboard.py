"""The dashboard in service mode, in Debian's headless Chromium: a key to sign in, one tenant's view per session.

Two tenants send the same prog_id and gauge (acme 500, globex 5) over signed
UDP. Without a session the page sends the browser to the login form; acme's
key shows acme's 500 and never globex's 5, globex's key the reverse; a wrong
key is refused; the admin key sees either tenant with `?tenant=`. The session
cookie is HttpOnly and SameSite=Strict and holds no key.
"""

from __future__ import annotations

import socket
import time
import urllib.parse

import pytest
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By

from mondemand.lwes import encode
from mondemand.messages import Metric, MetricType, StatsMsg
from mondemand.signing import sign
from tests.backends import dashboard_scenario as scenario
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
        wait_for(lambda: "not valid" in driver.find_element(By.ID, "login-error").text, what="the refusal")
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
