"""The dashboard page in Debian's headless Chromium, served by the real mondemand-server.

The server stores a week-ago and an earlier-today curve through its rrd
backend (sent by the test over UDP), then gets a live gauge and log lines
from `mondemand-emit`. The page must list the program and its hosts, show
the emitted value, plot both curves of the clicked metric, and show a new
error line without a reload while leaving out an info line.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from selenium.webdriver.common.by import By

from tests.backends import dashboard_scenario as scenario
from tests.e2e.harness import ServerProcess, emit, wait_for


@pytest.fixture
def page(tmp_path) -> Iterator[tuple[ServerProcess, int, object]]:
    server, listen_port, dashboard_port, now = scenario.start(tmp_path)
    driver = None
    try:
        scenario.send_history(server, listen_port, now)
        driver = scenario.chromium()
        driver.get(f"http://127.0.0.1:{dashboard_port}/")
        yield server, listen_port, driver
    finally:
        if driver is not None:
            driver.quit()
        assert server.stop() == 0, server.log()


def _rows(driver, selector: str) -> list:
    return driver.find_elements(By.CSS_SELECTOR, selector)


def test_page_shows_processes_live_values_history_charts_and_errors(page, tmp_path):
    _server, port, driver = page
    emit("-p", str(port), "stats", "--prog-id", scenario.PROG, "--host-name", "web01", "--gauge", "queue=17")

    wait_for(lambda: _rows(driver, f'#processes tr[data-prog="{scenario.PROG}"][data-status="live"]'),
             what="the program listed as live")
    hosts = {li.get_attribute("data-host") for li in _rows(driver, f'#processes tr[data-prog="{scenario.PROG}"] li')}
    assert hosts == {"web01", "web02", "all"}

    def queue_row():
        rows = _rows(driver, '#series tr[data-name="queue"][data-host="web01"]')
        return rows[0] if rows and rows[0].find_element(By.CSS_SELECTOR, ".value").text == "17" else None

    row = wait_for(queue_row, what="the emitted gauge value 17 in the series table")
    assert row.find_element(By.CSS_SELECTOR, ".average").text == "17"
    agg = _rows(driver, '#series tr.agg[data-name="latency"][data-host="all"]')
    assert {r.get_attribute("data-type") for r in agg} == {"count", "sum", "min", "max"}

    row.click()
    charts = wait_for(lambda: _rows(driver, '#charts .chart[data-today-points]'), what="history charts")
    by_stat = {c.get_attribute("data-stat"): c for c in charts}
    assert set(by_stat) == {"AVG", "MIN", "MAX"}
    today_minutes = scenario.TODAY_MINUTES[1] - scenario.TODAY_MINUTES[0] + 1
    week_minutes = scenario.WEEK_MINUTES[1] - scenario.WEEK_MINUTES[0] + 1
    for chart in charts:
        # The first minute of a curve may only create the file; the live value fills the last minutes up to now.
        assert today_minutes - 3 <= int(chart.get_attribute("data-today-points")) <= today_minutes + 4
        assert week_minutes - 3 <= int(chart.get_attribute("data-week-points")) <= week_minutes + 1
        canvas = chart.find_element(By.TAG_NAME, "canvas")
        assert canvas.size["width"] > 200 and canvas.size["height"] > 100
    # The chart holds the very values the test sent: last week's curve at its time of day.
    week_values = driver.execute_script("return window.mondemandDashboard.charts[0].data[2].filter(v => v !== null)")
    expected = {scenario.gauge_value(m, True) for m in range(*scenario.WEEK_MINUTES)}
    assert set(week_values) <= expected | {scenario.gauge_value(scenario.WEEK_MINUTES[1], True)}
    assert len(set(week_values)) > 5

    marker = uuid.uuid4().hex[:8]
    emit("-p", str(port), "log", "--prog-id", scenario.PROG, "--priority", "info", "-m", f"routine {marker}")
    emit("-p", str(port), "log", "--prog-id", scenario.PROG, "--priority", "error", "-m", f"disk full {marker}",
         "--file", "store.c", "--line", "42")
    line = wait_for(lambda: [li for li in _rows(driver, "#errors li") if marker in li.text], what="the error line")
    assert "disk full" in line[0].text and "store.c:42" in line[0].text
    assert line[0].find_element(By.CSS_SELECTOR, ".priority").text.lower() == "error"
    assert not [li for li in _rows(driver, "#errors li") if f"routine {marker}" in li.text]
    assert driver.execute_script("return performance.getEntriesByType('navigation').length") == 1  # no reload

    shot = tmp_path / "dashboard.png"
    assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
