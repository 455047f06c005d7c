"""mondemand: an LWES/mondemand event router.

Plugins write `@mondemand.hookimpl` on the hooks declared in `mondemand.hookspecs`.
"""

from mondemand.hookspecs import hookimpl

__version__ = "0.1.0"
__all__ = ["__version__", "hookimpl"]
