"""examples/mondemand-server.service: hardened as docs/deploy.md says, and accepted by systemd-analyze verify."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.conftest import ROOT
from tests.e2e.harness import BIN

UNIT = ROOT / "examples" / "mondemand-server.service"


def settings() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


def test_unit_is_hardened_and_restarts_on_failure():
    s = settings()
    for key, value in {"ProtectSystem": "strict", "NoNewPrivileges": "yes", "PrivateTmp": "yes",
                       "ProtectHome": "yes", "DynamicUser": "yes", "Restart": "on-failure",
                       "CapabilityBoundingSet": "CAP_NET_ADMIN", "ReadWritePaths": "/var/lib/mondemand",
                       "StateDirectory": "mondemand", "ExecReload": "/bin/kill -HUP $MAINPID"}.items():
        assert s.get(key) == [value], key
    assert int(s["LimitNOFILE"][0]) >= 65536
    assert s["ExecStart"] == ["/opt/mondemand/bin/mondemand-server -c /etc/mondemand/routes.ini"]
    assert s["ExecStartPre"] == ["/opt/mondemand/bin/mondemand-server -c /etc/mondemand/routes.ini --check"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verify_accepts_the_unit(tmp_path):
    # verify insists that ExecStart exists: point it at this venv's tools.
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace("/opt/mondemand/bin/", f"{BIN}/"))
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    ours = [line for line in result.stderr.splitlines() if UNIT.name in line]
    assert result.returncode == 0 and ours == [], result.stderr
