"""Make docs/dashboard.png: the dashboard page in headless Chromium, on the browser test's scenario.

Run from the repository root after `make setup` (needs Debian's chromium and chromium-driver):

    .venv/bin/python docs/make_screenshot.py [output.png]

It starts the real mondemand-server with an rrd and a dashboard backend,
sends a week-ago and an earlier-today curve, a live value and two log lines,
opens the page, clicks the DaTtSs metric and saves the screenshot.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from selenium.webdriver.common.by import By  # noqa: E402

from tests.backends.dashboard import dashboard_scenario as scenario  # noqa: E402
from tests.e2e.harness import emit, wait_for  # noqa: E402


def main(out: Path) -> None:
    """Run the scenario and write the screenshot to `out`."""
    with tempfile.TemporaryDirectory() as tmp:
        server, port, dashboard_port, now = scenario.start(Path(tmp))
        driver = None
        try:
            scenario.send_history(server, port, now)
            emit("-p", str(port), "stats", "--prog-id", scenario.PROG, "--host-name", "web01", "--gauge", "queue=57",
                 "--statset", "latency=12:540:31:70:45")
            emit("-p", str(port), "stats", "--prog-id", "billing", "--host-name", "pay01", "--counter", "invoices=920")
            for host, errors, rss in (("web01", 3, 61_000_000), ("web02", 0, 48_500_000)):
                for at, count in (("-60s", 0), ("now", errors)):
                    emit("-p", str(port), "stats", "--prog-id", scenario.PROG, "--host-name", host, "--time", at,
                         "--gauge", "process_uptime_s=86000", "--gauge", f"process_rss_bytes={rss}",
                         "--gauge", "process_cpu_pct=7", "--counter", f"process_log_errors={count}",
                         "--counter", "process_log_warnings=1")
            emit("-p", str(port), "log", "--prog-id", scenario.PROG, "--host-name", "web02", "--priority", "warning",
                 "-m", "queue above 50 for 5 minutes", "--file", "queue.c", "--line", "88")
            emit("-p", str(port), "log", "--prog-id", scenario.PROG, "--host-name", "web01", "--priority", "error",
                 "-m", "disk full on /var/spool", "--file", "store.c", "--line", "42")
            driver = scenario.chromium(1600, 1500)
            driver.get(f"http://127.0.0.1:{dashboard_port}/#prog={scenario.PROG}")
            row = wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, '#series tr[data-name="query"]'),
                           what="the series table")[0]
            row.click()
            wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, "#charts .chart[data-today-points]"),
                     what="the charts")
            wait_for(lambda: len(driver.find_elements(By.CSS_SELECTOR, "#errors li")) >= 2, what="the log lines")
            driver.save_screenshot(str(out))
        finally:
            if driver is not None:
                driver.quit()
            server.stop()
    print(f"wrote {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "dashboard.png")
