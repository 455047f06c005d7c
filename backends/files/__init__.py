"""The text-file backends: `stats_file`, `log_file` and `trace_file` (docs/files.md).

`textfiles` holds what the dated text backends share (batching, escaping,
the outage handling) and `filecache` the append-only descriptors they keep
open between batches. Each backend is its own module, named as its type.
"""
