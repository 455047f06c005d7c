"""Replace a JSON file atomically: a reader (or a restart after kill -9) sees the old document or the new one."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def write_json_atomic(path: Path, document: Any, *, indent: int | None = None) -> None:
    """Write `document` to a temporary file beside `path`, fsync it, then rename it over `path`.

    Compact JSON unless `indent` is given. Raises OSError; the temporary file is removed on failure.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            if indent is None:
                json.dump(document, fh, separators=(",", ":"))
            else:
                json.dump(document, fh, indent=indent)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
