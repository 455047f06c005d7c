"""Every command-line tool answers --version with the mondemand-server distribution's version."""

from __future__ import annotations

import subprocess
from importlib.metadata import version

import pytest

import mondemand
from tests.e2e.harness import BIN

TOOLS = ("mondemand-server", "mondemand-emit", "mondemand-dump", "mondemand-replay", "mondemand-rrd")


@pytest.mark.parametrize("tool", TOOLS)
def test_version_prints_the_distribution_version(tool):
    result = subprocess.run([str(BIN / tool), "--version"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{tool} {version('mondemand-server')} (mondemand-server)"


def test_package_version_comes_from_the_distribution_metadata():
    assert mondemand.DISTRIBUTION == "mondemand-server"
    assert mondemand.__version__ == version("mondemand-server")
