"""The plugin guide documents every hook."""

from __future__ import annotations

import inspect

from mondemand import hookspecs
from tests.conftest import ROOT


def test_every_hookspec_is_documented_with_its_signature():
    doc = (ROOT / "docs" / "plugins.md").read_text()
    specs = [name for name, fn in vars(hookspecs).items()
             if inspect.isfunction(fn) and hasattr(fn, "mondemand_spec")]
    assert specs, "no hookspecs found"
    for name in specs:
        params = ", ".join(inspect.signature(getattr(hookspecs, name)).parameters)
        assert f"`{name}({params})`" in doc, f"docs/plugins.md lacks {name}({params})"
