"""The `alerts` backend (`backend`): rules (`rules`), silences (`silences`) and notifiers; docs/alerts.md.

`notify_apprise` is the `apprise` notifier, imported only when one is
configured (the `alerts` extra). The dashboard writes `silences` too.
"""
