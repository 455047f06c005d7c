"""The `rrd` backend (`backend`) and its rrdcached protocol client (`rrdcached`); docs/rrd.md.

Kept empty so that `mondemand-rrd` and others can import `rrdcached` without
librrd's `rrdtool` module, which only `backend` needs (the `rrd` extra).
"""
