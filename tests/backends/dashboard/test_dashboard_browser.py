"""The dashboard page in Debian's headless Chromium, served by the real mondemand-server.

The server stores a week-ago and an earlier-today curve through its rrd
backend (sent by the test over UDP), then gets a live gauge and log lines
from `mondemand-emit`. The page must list the program and its hosts, show
the emitted value, plot both curves of the clicked metric, and show a new
error line without a reload while leaving out an info line.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from selenium.webdriver.common.by import By

from tests.backends.dashboard import dashboard_scenario as scenario
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
    # One row per metric with its statistics, not one per sub-statistic.
    agg = _rows(driver, '#series tr.agg[data-name="latency"][data-host="all"]')
    assert len(agg) == 1 and agg[0].get_attribute("data-type") == "statset"
    assert agg[0].get_attribute("data-stats") == "count,sum,min,max"
    query = _rows(driver, '#series tr[data-name="query"][data-host="web01"]')
    assert len(query) == 1 and query[0].get_attribute("data-stats") == "count,sum,min,max,avg,bot10,top10"
    assert not _rows(driver, '#series tr[data-name="query.bot10"]')
    # The filter box keeps only the matching rows.
    box = driver.find_element(By.ID, "series-filter")
    box.send_keys("quer")
    assert query[0].is_displayed() and not row.is_displayed()
    box.clear()
    box.send_keys(" ")  # an input event with nothing to filter on
    assert row.is_displayed()
    # Process health: up/down, uptime, memory, CPU, errors and warnings per minute from the process_* stats.
    second = int(time.time()) - 5
    at = [datetime.fromtimestamp(t, UTC).isoformat() for t in (second - 60, second)]
    emit("-p", str(port), "stats", "--prog-id", scenario.PROG, "--host-name", "web01", "--time", at[0],
         "--counter", "process_log_errors=5", "--counter", "process_log_warnings=0")
    emit("-p", str(port), "stats", "--prog-id", scenario.PROG, "--host-name", "web01", "--time", at[1], "--gauge",
         "process_uptime_s=7200", "--gauge", "process_rss_bytes=52428800", "--gauge", "process_cpu_pct=12",
         "--counter", "process_log_errors=8", "--counter", "process_log_warnings=1")

    def health():
        rows = _rows(driver, f'#health tr[data-prog="{scenario.PROG}"][data-host="web01"]')
        return rows[0] if rows and rows[0].find_element(By.CSS_SELECTOR, ".errors").text == "3" else None

    health_row = wait_for(health, what="3 errors a minute in the process panel")
    assert health_row.find_element(By.CSS_SELECTOR, ".state").text == "up"
    assert health_row.find_element(By.CSS_SELECTOR, ".uptime").text == "2.0 h"
    assert health_row.find_element(By.CSS_SELECTOR, ".memory").text == "50.0 MB"
    assert health_row.find_element(By.CSS_SELECTOR, ".cpu").text == "12 %"
    assert health_row.find_element(By.CSS_SELECTOR, ".warnings").text == "1"

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

    # The DaTtSs metric: MIN, MAX, AVG, BOT10, TOP10, COUNT, SUM, today against last week, per host.
    driver.find_element(By.CSS_SELECTOR, '#series tr[data-name="query"][data-host="web01"]').click()

    def query_charts():
        found = {c.get_attribute("data-stat"): c for c in _rows(driver, '#charts .chart[data-today-points]')}
        return found if "BOT10" in found else None

    by_stat = wait_for(query_charts, what="the query metric's charts")
    assert list(by_stat) == ["MIN", "MAX", "AVG", "BOT10", "TOP10", "COUNT", "SUM"]
    for chart in by_stat.values():
        assert int(chart.get_attribute("data-week-points")) >= week_minutes - 3
    bot = driver.execute_script("return window.mondemandDashboard.charts[3].data[2].filter(v => v !== null)")
    assert set(bot) <= {sum(sorted(v - 6 + (j * 7) % 20 for j in range(20))[:2]) / 2
                        for v in (scenario.gauge_value(m, True) for m in range(*scenario.WEEK_MINUTES))}
    # The week range reads the 15-minute archive: one point per quarter hour.
    driver.find_element(By.CSS_SELECTOR, '#history-ranges button[data-range="week"]').click()
    wait_for(lambda: driver.execute_script(
        "const c = window.mondemandDashboard.charts; return c.length > 0 && c[0].data[0][1] === 900"),
        what="the week range's quarter-hour charts")
    points = driver.execute_script("return window.mondemandDashboard.charts[0].data[2].filter(v => v !== null)")
    assert week_minutes // 15 - 2 <= len(points) <= week_minutes // 15 + 2
    driver.find_element(By.CSS_SELECTOR, '#history-ranges button[data-range="month"]').click()
    wait_for(lambda: driver.execute_script(
        "const c = window.mondemandDashboard.charts; return c.length > 0 && c[0].data[0][1] === 86400"),
        what="the month range's daily charts")

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
