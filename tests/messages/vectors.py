"""Access to the reference vectors for the message tests."""

from __future__ import annotations

import functools
import json
from typing import Any

from mondemand.lwes import Event, decode
from tests.conftest import VECTORS_FILE


@functools.cache
def _all() -> dict[str, dict[str, Any]]:
    # A missing file is an error, never a skip.
    return {v["id"]: v for v in json.loads(VECTORS_FILE.read_text())}


def all_vectors() -> list[dict[str, Any]]:
    """Every vector in file order."""
    return list(_all().values())


def vector_bytes(vector_id: str) -> bytes:
    """The datagram of one vector."""
    return bytes.fromhex(_all()[vector_id]["hex"])


def vector_event(vector_id: str) -> Event:
    """One vector decoded strictly by the LWES codec."""
    return decode(vector_bytes(vector_id), strict=True)
