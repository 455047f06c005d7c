"""The command-line tools; each takes `--version` (the `mondemand-server` distribution's version)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from mondemand import DISTRIBUTION

F = TypeVar("F", bound=Callable[..., Any])


def version_option() -> Callable[[F], F]:
    """click's `--version`, reading the version of the `mondemand-server` distribution from its metadata."""
    return click.version_option(package_name=DISTRIBUTION, message=f"%(prog)s %(version)s ({DISTRIBUTION})")
