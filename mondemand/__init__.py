"""mondemand: an LWES/mondemand event router.

Plugins write `@mondemand.hookimpl` on the hooks declared in `mondemand.hookspecs`.
The import package is `mondemand`; the distribution is `mondemand-server`
(`pip install mondemand-server`), whose metadata gives `__version__`.
"""

from importlib.metadata import PackageNotFoundError, version

from mondemand.hookspecs import hookimpl

#: The distribution name on PyPI and in `importlib.metadata` (an unrelated project owns "mondemand").
DISTRIBUTION = "mondemand-server"

try:
    __version__ = version(DISTRIBUTION)
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
__all__ = ["DISTRIBUTION", "__version__", "hookimpl"]
