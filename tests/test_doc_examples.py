"""Every fenced example in README.md and docs/ works as written, so the docs cannot drift.

- ```ini blocks load with `mondemand-server --check` (a fragment without a
  listener gets a minimal one; `${VAR}` placeholders get a value);
- `mondemand-emit` command lines in ```sh blocks run with `--dry-run` (they
  parse, and build the events they describe) and `mondemand-server ... --check`
  lines on a config of the repository run as they are (docs/deploy.md's
  /etc/mondemand/routes.ini is the reader's own);
- ```python blocks compile.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

BIN = Path(sys.executable).parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w+)[^\n]*\n(.*?)^```", re.M | re.S)
MINIMAL_LISTENER = "\n[listener:doc-example]\ntype = lwes-udp\naddress = 127.0.0.1\nport = 0\n"


def blocks(kind: str) -> list[tuple[str, str]]:
    found = []
    for path in DOCS:
        for i, match in enumerate(FENCE.finditer(path.read_text())):
            if match.group(1) == kind:
                found.append((f"{path.relative_to(ROOT)}#{i}", match.group(2)))
    return found


def commands(text: str) -> list[str]:
    """Shell command lines of a block, continuation lines joined, comments dropped."""
    joined = text.replace("\\\n", " ")
    lines = []
    for line in joined.splitlines():
        line = line.split(" # ")[0].strip() if not line.lstrip().startswith("#") else ""
        if line:
            lines.append(line)
    return lines


def test_the_docs_have_examples_to_check():
    assert len(blocks("ini")) >= 10 and len(blocks("sh")) >= 5


@pytest.mark.parametrize(("where", "text"), blocks("ini"), ids=[w for w, _ in blocks("ini")])
def test_every_ini_example_passes_check(tmp_path, where, text):
    env_names = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", text))
    if "[listener:" not in text:
        text += MINIMAL_LISTENER
    if "[route:" not in text:
        text += "\n[route:doc-example]\nevents = *\nbackends = " + (", ".join(
            re.findall(r"^\[backend:([^\]]+)\]", text, re.M)) or "doc-sink") + "\n"
        if "[backend:" not in text:
            text += "\n[backend:doc-sink]\ntype = sink\n"
    path = tmp_path / "routes.ini"
    path.write_text(text)
    env = {"PATH": "/usr/bin:/bin", **{name: "doc-example-value" for name in env_names}}
    result = subprocess.run([str(BIN / "mondemand-server"), "-c", str(path), "--check"], capture_output=True,
                            text=True, timeout=60, env=env)
    assert result.returncode == 0, f"{where}:\n{text}\n{result.stderr}"


def sh_commands() -> list[tuple[str, str]]:
    found = []
    for where, text in blocks("sh"):
        for line in commands(text):
            tool = shlex.split(line)[0].rsplit("/", 1)[-1]
            if tool == "mondemand-emit":
                found.append((where, line))
            elif tool == "mondemand-server" and "--check" in line:
                args = shlex.split(line)
                config = args[args.index("-c") + 1]
                if not config.startswith("/"):
                    found.append((where, line))
    return found


@pytest.mark.parametrize(("where", "line"), sh_commands(), ids=[f"{w}:{line[:50]}" for w, line in sh_commands()])
def test_every_emit_and_check_command_in_the_docs_runs(where, line):
    if "$(" in line:  # a date computed by the shell: let bash expand it, as a reader's shell would
        line = subprocess.run(["bash", "-c", f"echo {line}"], capture_output=True, text=True, check=True).stdout
    argv = shlex.split(line)
    tool = argv[0].rsplit("/", 1)[-1]
    argv[0] = str(BIN / tool)
    if tool == "mondemand-emit":
        argv.insert(1, "--dry-run")
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 0, f"{where}: {line}\n{result.stderr}"


@pytest.mark.parametrize(("where", "text"), blocks("python"), ids=[w for w, _ in blocks("python")])
def test_every_python_example_compiles(where, text):
    compile(text, where, "exec")
