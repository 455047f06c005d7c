"""`mondemand-server --check` refuses what start-up would refuse, naming file, section and key."""

from __future__ import annotations

import subprocess

from tests.e2e.harness import check_config


def check(tmp_path, text: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "routes.ini"
    path.write_text(text)
    return check_config(path)


def rrd_config(root, daemon: str) -> str:
    return f"""
[listener:udp]
type = lwes-udp
port = 0

[backend:graphs]
type = rrd
root = {root}
daemon = {daemon}

[route:stats]
events = MonDemand::StatsMsg
backends = graphs
"""


def test_rrd_root_with_white_space_is_refused_with_a_daemon_only(tmp_path):
    root = tmp_path / "my graphs"
    refused = check(tmp_path, rrd_config(root, "unix:/run/rrdcached.sock"))
    assert refused.returncode == 2
    assert refused.stderr.splitlines() == [
        "error: routes.ini: [backend:graphs] root: contains white space, "
        "which rrdcached's protocol (daemon) cannot carry"]
    direct = check(tmp_path, rrd_config(root, ""))
    assert direct.returncode == 0, direct.stderr
    assert not root.exists()  # --check creates nothing
