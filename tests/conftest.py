"""Shared fixtures: the LWES test vectors carried in tests/data/."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
VECTORS_FILE = Path(__file__).resolve().parent / "data" / "vectors.json"


def load_vectors() -> list[dict[str, Any]]:
    """Every LWES test vector; a missing file is an error, never a skip."""
    if not VECTORS_FILE.exists():
        raise FileNotFoundError(f"test vectors not found at {VECTORS_FILE}")
    return json.loads(VECTORS_FILE.read_text())


@pytest.fixture(scope="session")
def vectors() -> dict[str, dict[str, Any]]:
    return {v["id"]: v for v in load_vectors()}
