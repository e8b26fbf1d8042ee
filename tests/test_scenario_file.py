"""Scenario files: TOML text -> frozen values; every error names the line/column or the step."""
from __future__ import annotations

import pytest
from dispel.scenario_file import ScenarioError, Step, parse

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
