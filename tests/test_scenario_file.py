"""Scenario files: TOML text -> frozen values; every error names the line/column or the step."""
from __future__ import annotations

import json

import pytest
from dispel.run.scenario_file import parse
from dispel.run.scenario_values import PROCESS_EVENTS, PROCESS_ROOM, ScenarioError, Step

GOOD = """
title = "Chat"
timeout = 20

[app]
import = "app:socketio"

[clients.a]
transport = "polling"
namespaces = ["/", "/chat"]
headers = { "X-Team" = "blue" }
query = { token = "abc" }

[clients.b]

[[steps]]
client = "a"
do = "connect"

[[steps]]
client = "b"
do = "connect"
timeout = 3

[[steps]]
client = "a"
do = "emit"
event = "message"
data = { text = "hi" }
namespace = "/chat"
ack = true

[[steps]]
client = "b"
do = "join"
room = "r1"

[[steps]]
client = "b"
do = "expect"
event = "tick"
count = 3

[[steps]]
client = "a"
do = "sleep"
seconds = 0.5

[[steps]]
client = "a"
do = "disconnect"
"""


def test_good_file():
    sf = parse(GOOD, "chat.toml")
    assert sf.title == "Chat" and sf.timeout == 20.0
    assert sf.app.module == "app" and sf.app.attribute == "socketio" and not sf.app.factory
    a, b = sf.clients
    assert (a.name, a.transport, a.namespaces, a.headers, a.query) == ("a", "polling", ("/", "/chat"), (("X-Team", "blue"),), (("token", "abc"),))
    assert (b.transport, b.namespaces) == ("websocket", ("/",))
    kinds = [(s.index, s.do, s.client, s.event) for s in sf.steps]
    assert kinds == [(1, "connect", "a", ""), (2, "connect", "b", ""), (3, "emit", "a", "message"),
                     (4, "join", "b", "join"), (5, "expect", "b", "tick"), (6, "sleep", "a", ""), (7, "disconnect", "a", "")]
    assert sf.steps[1].timeout == 3.0 and sf.steps[0].timeout == 10.0
    assert sf.steps[2].data == {"text": "hi"} and sf.steps[2].ack and sf.steps[2].namespace == "/chat"
    assert sf.steps[3].data == "r1" and sf.steps[3].has_data
    assert sf.steps[4].count == 3
    assert sf.steps[5].seconds == 0.5
    assert sf.steps[2].mark == "3-a-emit-message"
    assert Step.from_json(sf.steps[2].to_json()) == sf.steps[2]


def replace(old: str, new: str) -> str:
    assert old in GOOD
    return GOOD.replace(old, new, 1)


BAD = [
    ("syntax", replace('title = "Chat"', 'title = "Chat'), "chat.toml:2:"),
    ("syntax names column", replace('timeout = 20', 'timeout = = 20'), "line 3, column"),
    ("unknown top-level", GOOD + "\n[redis]\nport = 1\n", "'redis'"),
    ("missing app", replace('[app]\nimport = "app:socketio"\n', ""), "[app]: missing"),
    ("bad import", replace('"app:socketio"', '"app"'), "module:attribute"),
    ("bad transport", replace('"polling"', '"carrier-pigeon"'), "[clients.a]: transport 'carrier-pigeon'"),
    ("bad namespace", replace('["/", "/chat"]', '["chat"]'), "starts with '/'"),
    ("unknown step kind", replace('do = "sleep"', 'do = "nap"'), "steps[6]: do = 'nap'"),
    ("unknown client", replace('client = "b"\ndo = "join"', 'client = "z"\ndo = "join"'), "steps[4]: join: unknown client 'z'"),
    ("emit without event", replace('event = "message"\n', ""), "steps[3] (emit, client a): missing 'event'"),
    ("join without room", replace('room = "r1"\n', ""), "steps[4] (join, client b): missing 'room'"),
    ("unknown step key", replace('count = 3', 'cuont = 3'), "unknown key 'cuont'"),
    ("negative timeout", replace('timeout = 3', 'timeout = -1'), "steps[2] (connect, client b): 'timeout' must be a positive number"),
    ("namespace not connected", replace('namespace = "/chat"', 'namespace = "/other"'), "does not connect to namespace '/other'"),
    ("emit before connect", replace('client = "a"\ndo = "connect"', 'client = "a"\ndo = "sleep"'), "steps[3] (emit 'message', client a): the client is not connected"),
]


@pytest.mark.parametrize("text, needle", [(t, n) for _, t, n in BAD], ids=[c[0] for c in BAD])
def test_bad_file_names_the_place(text, needle):
    with pytest.raises(ScenarioError) as info:
        parse(text, "chat.toml")
    message = str(info.value)
    assert needle in message, message
    assert "\n" not in message


def test_a_file_cut_short_names_its_last_line():
    with pytest.raises(ScenarioError) as info:
        parse('[app]\nimport = "app:socketio"\nx = [1,', "cut.toml")
    assert str(info.value).startswith("cut.toml:3: not valid TOML:") and "line 3" in str(info.value)


# ------------------------------------------------------------------ several processes ([broker], [processes])

SEVERAL = """
title = "Two servers"

[broker]
kind = "redis"

[processes.server-a]
import = "dispel.sample_app.cluster"
kind = "server"

[processes.emitter]
import = "dispel.sample_app.emitter"
kind = "emitter"

[clients.1]
process = "server-a"

[[steps]]
client = "1"
do = "connect"

[[steps]]
client = "1"
do = "join"
room = "room-1"

[[steps]]
process = "emitter"
do = "emit"

[[steps]]
client = "1"
do = "expect"
event = "news"
count = 2

[[steps]]
client = "1"
do = "disconnect"
"""


def test_several_processes():
    sf = parse(SEVERAL, "q.toml")
    assert sf.app is None and sf.broker is not None and sf.broker.kind == "redis"
    assert [(p.role, p.kind, p.module) for p in sf.processes] == [
        ("server-a", "server", "dispel.sample_app.cluster"), ("emitter", "emitter", "dispel.sample_app.emitter")]
    assert [(c.name, c.process) for c in sf.clients] == [("1", "server-a")]
    assert [(s.do, s.client, s.process, s.event, s.count) for s in sf.steps] == [
        ("connect", "1", "", "", 1), ("join", "1", "", "join", 1), ("emit", "", "emitter", "", 1),
        ("expect", "1", "", "news", 2), ("disconnect", "1", "", "", 1)]
    assert sf.steps[2].label == "steps[3] (emit, process emitter)"
    # a file of one app has none of it
    one = parse(GOOD, "chat.toml")
    assert one.broker is None and one.processes == () and one.clients[0].process == ""


def several(old: str, new: str) -> str:
    assert old in SEVERAL
    return SEVERAL.replace(old, new, 1)


BAD_SEVERAL = [
    ("app and processes", '[app]\nimport = "app:socketio"\n' + SEVERAL, "[app]: give [app] (one server) or [processes]"),
    ("no broker", several('[broker]\nkind = "redis"\n', ""), "[broker]: missing"),
    ("broker without processes", GOOD + '\n[broker]\nkind = "redis"\n', "[broker]: a broker joins several processes"),
    ("unknown broker", several('kind = "redis"', 'kind = "kafka"'), "[broker]: kind = 'kafka' is not one of: redis"),
    ("unknown process kind", several('kind = "emitter"', 'kind = "worker"'), "[processes.emitter]: kind = 'worker'"),
    ("bad module", several('"dispel.sample_app.emitter"', '"sample_app:emitter"'), "[processes.emitter]: import = 'sample_app:emitter' must be a module"),
    ("unknown process key", several('kind = "server"', 'knd = "server"'), "[processes.server-a]: unknown key 'knd'"),
    ("no server", several('kind = "server"', 'kind = "emitter"'), "[processes]: needs a server process"),
    ("client on no server", several('process = "server-a"', 'process = "emitter"'), "[clients.1]: process = 'emitter' is not a server process"),
    ("client without process", several('process = "server-a"', ''), "[clients.1]: missing 'process'"),
    ("client transport", several('process = "server-a"', 'process = "server-a"\ntransport = "polling"'), "[clients.1]: unknown key 'transport'"),
    ("step on a server", several('process = "emitter"\ndo = "emit"', 'process = "server-a"\ndo = "emit"'), "steps[3]: process = 'server-a' is not an emitter"),
    ("emitter connects", several('process = "emitter"\ndo = "emit"', 'process = "emitter"\ndo = "connect"'), "steps[3] (connect, process emitter): do = 'connect'"),
    ("client emits", several('client = "1"\ndo = "join"', 'client = "1"\ndo = "emit"'), "steps[2]: do = 'emit': a client's step of several processes"),
    ("other room", several('room = "room-1"', 'room = "room-2"'), "steps[2] (join, client 1): room = 'room-2'"),
    ("unheard event", several('event = "news"', 'event = "tick"'), "steps[4] (expect, client 1): event = 'tick'"),
    ("step timeout", several('count = 2', 'count = 2\ntimeout = 3'), "steps[4] (expect, client 1): unknown key 'timeout'"),
    ("expect before connect", several('client = "1"\ndo = "connect"', 'process = "emitter"\ndo = "emit"'), "steps[2] (join 'join', client 1): the client is not connected"),
]


@pytest.mark.parametrize("text, needle", [(t, n) for _, t, n in BAD_SEVERAL], ids=[c[0] for c in BAD_SEVERAL])
def test_bad_file_of_several_processes_names_the_place(text, needle):
    test_bad_file_names_the_place(text, needle)


def test_the_process_client_can_do_what_the_format_allows():

    from dispel.run import sample_client as client

    assert client.ROOM == PROCESS_ROOM
    for event in PROCESS_EVENTS:
        assert event in client.EVENTS, event


def test_the_queue_scenario_is_its_file():
    """The catalogue's queue scenario is read from scripts/dispel/sample_app/queue.toml: the file's
    steps are the runner's steps, its processes and clients the runner's."""
    from pathlib import Path

    from dispel import catalog

    path = Path(__file__).resolve().parents[1] / "scripts" / "dispel" / "sample_app" / "queue.toml"
    sf = parse(path.read_text(), "queue.toml")
    sc = catalog.PROCESS_SCENARIOS["queue"]
    assert catalog.PROCESS_SCENARIO_FILES["queue"].resolve() == path
    assert [(p.role, p.kind, p.module) for p in sc.processes] == [(p.role, p.kind, p.module) for p in sf.processes]
    assert sc.clients == (("1", "server-a"), ("2", "server-b")) and sc.broker == "redis"
    assert len(sc.steps) == len(sf.steps)
    assert sc.steps[4] == "2:expect-joined*2" and sc.steps[5] == "emitter:emit"


def test_a_file_of_several_processes_is_not_run_as_one_app():
    from dispel.run.scenario_file import one_app

    with pytest.raises(ScenarioError, match=r"q.toml: \[processes\]: .*dispel record queue"):
        one_app(parse(SEVERAL, "q.toml"))
    assert one_app(parse(GOOD, "chat.toml")).app is not None


# ------------------------------------------------------------------ steps for real apps (http, refusals, bytes, replies)

REAL = """
[app]
import = "board:socketio"

[clients.a]
auth = { token = "s3cret" }
replies = { question = "42", photo = { bytes = "base64:AP8=" } }

[clients.b]

[[steps]]
client = "b"
do = "connect"
refused = "unauthorized"

[[steps]]
client = "a"
do = "http"
method = "POST"
path = "/notices"
json = { text = "hi", raw = { bytes = "hex:00ff" } }
status = 201

[[steps]]
client = "a"
do = "connect"

[[steps]]
client = "a"
do = "emit"
event = "upload"
args = ["photo.png", { bytes = "hex:89504e47" }]

[[steps]]
client = "a"
do = "expect"
event = "uploaded"
data = { head = { bytes = "hex:8950" } }

[[steps]]
client = "a"
do = "http"
path = "/health"

[[steps]]
client = "a"
do = "disconnect"
by = "server"

[[steps]]
client = "b"
do = "connect"
"""


def test_steps_for_real_apps():
    sf = parse(REAL, "board.toml")
    a, b = sf.clients
    assert dict(a.replies) == {"question": "42", "photo": b"\x00\xff"} and b.replies == ()
    assert a.spec()["replies"] == {"question": "42", "photo": {"bytes": "base64:AP8="}}
    refused, post, _, upload, expect, get, gone, again = sf.steps
    assert refused.refused == "unauthorized" and not refused.connects and refused.label == "steps[1] (connect, refused, client b)"
    assert (post.method, post.path, post.body_kind, post.status) == ("POST", "/notices", "json", 201)
    assert post.body == {"text": "hi", "raw": b"\x00\xff"} and post.label == "steps[2] (http POST /notices, client a)"
    assert upload.args == ("photo.png", b"\x89PNG") and upload.has_args and not upload.has_data
    assert expect.data == {"head": b"\x89P"} and expect.has_data
    assert (get.method, get.body_kind, get.status) == ("GET", "", 200)
    assert gone.by == "server" and gone.disconnects and gone.label == "steps[7] (disconnect by the server, client a)"
    assert again.connects  # a refused client may connect again
    for s in sf.steps:  # what the client process reads back is the step itself, bytes and all
        assert Step.from_json(json.loads(json.dumps(s.to_json()))) == s
    # a step of the kinds that were there before writes the same JSON as before
    assert set(parse(GOOD, "chat.toml").steps[2].to_json()) == {
        "index", "do", "client", "timeout", "event", "data", "has_data", "ack", "namespace", "count", "seconds"}


def test_http_and_sleep_without_a_client_run_as_the_first_client():
    # they need no connection: in a file of several clients they run as the file's first one
    text = real('client = "a"\ndo = "http"\nmethod', 'do = "http"\nmethod') + '\n[[steps]]\ndo = "sleep"\nseconds = 0.1\n'
    steps = parse(text, "board.toml").steps
    assert (steps[1].do, steps[1].client, steps[1].label) == ("http", "a", "steps[2] (http POST /notices, client a)")
    assert (steps[-1].do, steps[-1].client) == ("sleep", "a")
    first_z = '[app]\nimport = "a:b"\n[clients.z]\n[clients.a]\n[[steps]]\ndo = "http"\npath = "/"\n[[steps]]\ndo = "sleep"\n'
    assert [s.client for s in parse(first_z, "z.toml").steps] == ["z", "z"]
    # any other step still asks which client
    with pytest.raises(ScenarioError, match=r"steps\[3\]: connect: which client\? give client = one of: a, b"):
        parse(real('client = "a"\ndo = "connect"', 'do = "connect"'), "board.toml")


def real(old: str, new: str) -> str:
    assert old in REAL
    return REAL.replace(old, new, 1)


BAD_REAL = [
    ("bytes without prefix", real('"hex:89504e47"', '"89504e47"'), "steps[4] (emit, client a): bytes = '89504e47' must start with 'hex:' or 'base64:'"),
    ("bad hex", real('"hex:89504e47"', '"hex:8g"'), "steps[4] (emit, client a): bytes = 'hex:8g': after 'hex:' come pairs of hex digits"),
    ("bad base64", real('"base64:AP8="', '"base64:A*"'), "[clients.a] replies.photo: bytes = 'base64:A*': after 'base64:'"),
    ("replies not a table", real('replies = { question = "42", photo = { bytes = "base64:AP8=" } }', 'replies = "42"'), "[clients.a]: replies must be a table"),
    ("data and args", real('args = ["photo.png"', 'data = 1\nargs = ["photo.png"'), "steps[4] (emit, client a): give data (one argument) or args (several), not both"),
    ("args not a list", real('args = ["photo.png", { bytes = "hex:89504e47" }]', 'args = "photo.png"'), "steps[4] (emit, client a): args must be a list"),
    ("refused empty", real('refused = "unauthorized"', 'refused = ""'), "steps[1] (connect, client b): refused must be the refusal's message"),
    ("refused false", real('refused = "unauthorized"', 'refused = false'), "refused must be the refusal's message (a string) or true"),
    ("disconnect by whom", real('by = "server"', 'by = "app"'), "steps[7] (disconnect, client a): by = 'app' is not one of: client, server"),
    ("http without path", real('path = "/notices"\n', ''), "steps[2] (http, client a): missing 'path'"),
    ("http relative path", real('path = "/notices"', 'path = "notices"'), "steps[2] (http, client a): path = 'notices' must start with '/'"),
    ("http method", real('method = "POST"', 'method = "FETCH"'), "steps[2] (http, client a): method = 'FETCH' is not one of: GET, POST"),
    ("http two bodies", real('status = 201', 'status = 201\nbody = "x"'), "steps[2] (http, client a): give one body: json, form or body, not json and body"),
    ("http GET with body", real('method = "POST"', 'method = "GET"'), "a GET sends no body"),
    ("http status", real('status = 201', 'status = 42'), "steps[2] (http, client a): status must be an HTTP status code"),
    ("http form", real('json = { text = "hi", raw = { bytes = "hex:00ff" } }', 'form = { text = ["a"] }'), "form must be a table of strings"),
    ("http key on emit", real('event = "upload"', 'event = "upload"\nstatus = 200'), "steps[4] (emit, client a): unknown key 'status'"),
    ("refused on emit", real('event = "upload"', 'event = "upload"\nrefused = "x"'), "steps[4] (emit, client a): unknown key 'refused'"),
    ("emit after refusal", real('client = "b"\ndo = "connect"\nrefused', 'client = "b"\ndo = "connect"\nrefused').replace(
        '[[steps]]\nclient = "a"\ndo = "http"\nmethod', '[[steps]]\nclient = "b"\ndo = "emit"\nevent = "x"\n\n[[steps]]\nclient = "a"\ndo = "http"\nmethod', 1),
     "steps[2] (emit 'x', client b): the client is not connected"),
]


@pytest.mark.parametrize("text, needle", [(t, n) for _, t, n in BAD_REAL], ids=[c[0] for c in BAD_REAL])
def test_bad_steps_for_real_apps_name_the_place(text, needle):
    with pytest.raises(ScenarioError) as info:
        parse(text, "board.toml")
    message = str(info.value)
    assert needle in message, message
    assert "\n" not in message


def test_bytes_in_toml():
    from dispel.run.scenario_values import decode_bytes, to_jsonable

    assert decode_bytes({"bytes": "hex:00 ff"}) == b"\x00\xff"  # spaces between pairs are allowed
    assert decode_bytes([{"bytes": "base64:AP8="}, {"bytes": 1}]) == [b"\x00\xff", {"bytes": 1}]  # not a string: a table
    assert decode_bytes({"bytes": "hex:00", "name": "x"}) == {"bytes": "hex:00", "name": "x"}  # more keys: a table
    assert decode_bytes(to_jsonable({"a": [b"\x00\x01", "t"]})) == {"a": [b"\x00\x01", "t"]}


def test_the_example_apps_files_parse():
    from pathlib import Path

    apps = Path(__file__).resolve().parent / "programs" / "apps"
    for path in sorted(apps.rglob("*.toml")):  # the apps in folders of their own too (shop/, taskboard/)
        parse(path.read_text(), path.name)


def test_frame_payload():
    from dispel.chains.derive_packets import frame_payload

    assert frame_payload(b"\x81\x0241") == (1, b"41")
    assert frame_payload(b"\x82\x04\x89PNG") == (2, b"\x89PNG")
    assert frame_payload(b"\x81\x7e\x00\x80" + b"x" * 128) == (1, b"x" * 128)
    assert frame_payload(b"\x81\x82abcd..") is None  # masked: a client's frame
    assert frame_payload(b"\x81") is None


def test_packets_of_a_write():
    from dispel.chains.derive_packets import packets_of

    assert packets_of(b"\x81\x0241") == [(1, b"41")]
    assert packets_of(b"\x82\x04\x89PNG") == [(2, b"\x89PNG")]
    assert packets_of(b"\x88\x02\x03\xe8") == []  # a close frame carries no packet
    # long-polling: the packets of an HTTP body, joined by the record separator; binary as b<base64>
    assert packets_of(b'451-["up",{"_placeholder":true,"num":0}]\x1ebiVBORw==') == [
        (1, b'451-["up",{"_placeholder":true,"num":0}]'), (2, b"biVBORw==")]
    assert packets_of(b"41") == [(1, b"41")]
    for other in (b"HTTP/1.1 200 OK\r\n\r\n", b"\r\n", b"3c", b"<!doctype html>", b""):
        assert packets_of(other) in ([], [(1, b"3c")]), other
