"""The `trace_file` backend and its browsing API against real files."""

from __future__ import annotations

import json

import pytest
from mondemand.backends.files.trace_file import MAX_ATTEMPTS, TraceBrowser, TraceFileBackend, file_name

from mondemand.lwes import Event, LwesType
from mondemand.messages import TraceMsg
from mondemand.plugin_api import ServerContext
from mondemand.safepath import MAX_NAME_BYTES, safe_name
from tests.backends.files.file_helpers import T0, files_under, make_backend, received


def trace(owner: str = "alice", trace_id: str = "t-42", message: str = "checkout", prog_id: str = "shop",
          **fields: str) -> TraceMsg:
    return TraceMsg(prog_id, trace_id, owner, "web01", message, fields)


@pytest.fixture
def context():
    return ServerContext()


@pytest.fixture
def backend(tmp_path, context):
    b = make_backend(TraceFileBackend, tmp_path / "traces", context, backend_name="traces")
    yield b
    b.close()


def test_each_event_is_one_json_file_named_by_receipt_time_and_prog_id(tmp_path, backend):
    backend.handle(received(trace(cart='{"items": 3}', note="[not json"), receipt_ms=T0, port=999))
    [path] = files_under(tmp_path / "traces")
    assert path == tmp_path / f"traces/alice/t-42/trace-{T0}-0-shop"
    doc = json.loads(path.read_text())
    assert next(iter(doc)) == "EventName" and doc["EventName"] == "MonDemand::TraceMsg"
    assert doc["mondemand.message"] == "checkout"
    assert doc["cart"] == {"items": 3}  # a JSON object sent as a string is stored as JSON
    assert doc["note"] == "[not json"
    assert (doc["ReceiptTime"], doc["SenderIP"], doc["SenderPort"]) == (T0, "192.0.2.7", 999)
    assert backend.counters()["traces_written"] == 1


def test_events_received_in_the_same_millisecond_get_increasing_numbers(tmp_path, backend):
    backend.handle(received(trace(message="a")) + received(trace(message="b")) + received(trace(message="c")))
    names = sorted(p.name for p in files_under(tmp_path / "traces"))
    assert names == [f"trace-{T0}-{n}-shop" for n in range(3)]


def test_after_100_taken_names_the_event_is_dropped_and_counted(tmp_path, backend):
    directory = tmp_path / "traces/alice/t-42"
    directory.mkdir(parents=True)
    for n in range(MAX_ATTEMPTS):
        (directory / file_name(T0, n, "shop", [])).write_text("{}")
    backend.handle(received(trace()) + received(trace(owner="bob")))
    assert backend.counters()["conflicts"] == 1
    assert (tmp_path / f"traces/bob/t-42/trace-{T0}-0-shop").exists()  # the next event is unaffected


def test_extra_fields_are_appended_to_the_name_in_order_and_missing_ones_skipped(tmp_path):
    backend = make_backend(TraceFileBackend, tmp_path, extra_fields="step, absent, mondemand.src_host")
    backend.handle(received(trace(step="pay")))
    assert [p.name for p in files_under(tmp_path)] == [f"trace-{T0}-0-shop-pay-web01"]


def test_missing_owner_and_id_are_unknown_and_non_string_ones_are_text(tmp_path, backend):
    bare = Event("MonDemand::TraceMsg").set("mondemand.message", LwesType.STRING, "hi")
    typed = (Event("MonDemand::TraceMsg").set("mondemand.owner", LwesType.INT32, 7)
             .set("mondemand.trace_id", LwesType.DOUBLE, 1.5).set("mondemand.prog_id", LwesType.STRING, "p"))
    backend.handle(received(bare) + received(typed))
    assert [p.relative_to(tmp_path / "traces").parts[:2] for p in files_under(tmp_path / "traces")] == [
        ("7", "1.5"), ("unknown", "unknown")]


UNSAFE = ["..", "../..", "/etc", "a/b", ".", "nul\0x", "z" * 500, ""]


@pytest.mark.parametrize("name", UNSAFE)
def test_wire_names_never_leave_the_root(tmp_path, name):
    root = tmp_path / "traces"
    backend = make_backend(TraceFileBackend, root, extra_fields="extra")
    backend.handle(received(trace(owner=name, trace_id=name, prog_id=name, extra=name)))
    [path] = files_under(root)
    owner, trace_id, file = path.relative_to(root).parts
    assert (owner, trace_id) == (safe_name(name), safe_name(name))
    assert len(file.encode()) <= MAX_NAME_BYTES and "/" not in file and not file.startswith(".")
    assert list(tmp_path.iterdir()) == [root]


def test_the_browsing_api_is_registered_on_the_servers_http_routes(backend, context):
    handler = context.http_routes["/traces"]
    assert isinstance(handler, TraceBrowser)
    other = make_backend(TraceFileBackend, backend.root.parent / "other", context, backend_name="second")
    assert context.http_routes["/traces"] is handler  # the first backend keeps it
    again = make_backend(TraceFileBackend, backend.root, context, backend_name="traces")  # a restarted instance
    assert context.http_routes["/traces"] is not handler
    for b in (other, again):
        b.close()


def test_no_api_when_http_path_is_empty(tmp_path, context):
    make_backend(TraceFileBackend, tmp_path, context, http_path="")
    assert context.http_routes == {}


def test_browse_owners_traces_and_one_traces_events(tmp_path, backend, context):
    backend.handle(received(trace(message="second"), receipt_ms=T0 + 20)
                   + received(trace(message="first"), receipt_ms=T0 + 10)
                   + received(trace(trace_id="t-7"), receipt_ms=T0)
                   + received(trace(owner="bob"), receipt_ms=T0)
                   + received(trace(owner="a/b", trace_id="x y"), receipt_ms=T0))
    browse = context.http_routes["/traces"]
    status, body = browse("/traces", {})
    assert status == 200
    assert [o["name"] for o in body["owners"]] == ["a/b", "alice", "bob"]
    assert browse("/traces/", {"term": "al"})[1]["owners"] == [{"name": "alice", "href": "/traces/alice"}]
    status, body = browse("/traces/alice", {})
    assert status == 200 and [t["name"] for t in body["traces"]] == ["t-42", "t-7"]
    status, body = browse("/traces/alice/t-42", {})
    assert status == 200
    assert [e["message"] for e in body["events"]] == ["first", "second"]
    assert body["events"][0]["receipt_time"] == T0 + 10 and body["events"][0]["prog_id"] == "shop"
    assert body["total"] == 2 and body["truncated"] is False
    status, doc = browse(body["events"][1]["href"], {})
    assert status == 200 and doc["mondemand.message"] == "second"
    # Names from the wire with '/' and spaces: URL-quoted in hrefs, escaped on disk.
    [owner] = [o for o in browse("/traces", {})[1]["owners"] if o["name"] == "a/b"]
    assert owner["href"] == "/traces/a%252Fb"
    status, body = browse("/traces/a%2Fb/x%20y", {})
    assert status == 200 and len(body["events"]) == 1
    assert browse("/traces/alice/t-42", {"limit": "1"})[1]["truncated"] is True


def test_browsing_answers_404_for_what_does_not_exist(backend, context):
    backend.handle(received(trace()))
    browse = context.http_routes["/traces"]
    assert browse("/traces/nobody", {})[0] == 404
    assert browse("/traces/alice/none", {})[0] == 404
    assert browse("/traces/alice/t-42/trace-0-0-x", {})[0] == 404
    assert browse("/traces/a/b/c/d", {})[0] == 404


@pytest.mark.parametrize("path", [
    "/traces/..", "/traces/../..", "/traces/%2E%2E/%2E%2E", "/traces/alice/t-42/..", "/traces/alice/t-42/%2E%2E",
    "/traces/alice/..%2F..%2F..%2Fetc", "/traces/alice/t-42/..%2F..%2F..%2Fsecret", "/traces/alice/t-42/.hidden",
])
def test_browsing_never_reads_outside_the_root(tmp_path, backend, context, path):
    (tmp_path / "secret").write_text('{"leaked": true}')
    backend.handle(received(trace()))
    status, body = context.http_routes["/traces"](path, {})
    assert status in (400, 404)
    assert "leaked" not in json.dumps(body)


def test_an_unreadable_file_is_skipped_in_listings(tmp_path, backend, context):
    backend.handle(received(trace()))
    (tmp_path / f"traces/alice/t-42/trace-{T0}-5-shop").write_text("{half")
    status, body = context.http_routes["/traces"]("/traces/alice/t-42", {})
    assert status == 200 and len(body["events"]) == 1 and body["unreadable"] == 1
    assert context.http_routes["/traces"](f"/traces/alice/t-42/trace-{T0}-5-shop", {})[0] == 500
