"""Small synthetic chains for the render and site tests: every awkward case in a few hops."""
from __future__ import annotations

from dispel.model import (
    EDGE_CALL,
    EDGE_DATA,
    EDGE_ENTRY,
    EDGE_THREAD_START,
    EDGE_WAKE,
    Chain,
    Func,
    Hop,
    Source,
    WireField,
    WireLayer,
)
from dispel.render.pages import HopLinks

PAYLOAD = '<b>hi</b> & "quotes"'
SHA = "0123456789abcdef0123456789abcdef01234567"

APP = Source("sample_app", "0", "dispel/sample_app/app.py")
SIO = Source("python-socketio", "5.16.3", "socketio/server.py")
STDLIB = Source("python", "3.11.7", "Lib/queue.py")
WS = Source("simple-websocket", "1.1.0", "simple_websocket/ws.py")
C = Source("builtin", "3.11.7", "")

APP_LINES = (
    '"""A tiny app."""',
    "from flask_socketio import emit",
    "",
    "",
    "def on_chat(message):",
    '    emit("reply", {"echo": message})',
)
# A library function whose source holds backticks (even a run of three) and HTML.
SIO_LINES = (
    "class Server:",
    "    def emit(self, event, data=None, to=None):",
    '        """Emit ``event``; a docstring with ``` and <b>markup</b> & more."""',
    "        packet = self._encode(event, data)",
    "        return self.eio.send(to, packet)",
)
STDLIB_LINES = tuple(f"# line {n}" for n in range(1, 140)) + (
    "    def put(self, item, block=True, timeout=None):",
    *(f"        step_{n} = {n}" for n in range(1, 40)),
    "        self._put(item)",
    "        self.not_empty.notify()",
)
WS_LINES = (
    "class Base:",
    "    def _thread(self):",
    "        while True:",
    "            data = self.out.get()",
    "            self.sock.send(data)  # " + "x" * 300,
)

HOPS = (
    Hop(Func("dispel.sample_app.app", "on_chat", APP, 5, 6), 6, "handler-1", EDGE_ENTRY, 10, line_text='emit("reply", {"echo": message})'),
    Hop(Func("socketio.server", "Server.emit", SIO, 2, 5), 5, "handler-1", EDGE_CALL, 11, value='42["reply",{"echo":"' + PAYLOAD.replace('"', '\\"') + '"}]'),
    Hop(Func("queue", "Queue.put", STDLIB, 140, 181), 181, "handler-1", EDGE_CALL, 12, value="value with ``` backticks and `one`"),
    Hop(Func("simple_websocket.ws", "Base._thread", WS, 2, 5), 5, "ws-writer-1", EDGE_WAKE, 20, value="x" * 5000),
    Hop(Func("socket", "socket.send", C, 0, 0), 0, "ws-writer-1", EDGE_DATA, 21, value="b'\\x81\\x1e42[\"reply\"...'"),
)
HOP_LINKS = {
    hop: HopLinks(
        line=f"https://github.com/o/{hop.func.source.dist}/blob/{SHA}/{hop.func.source.path}#L{hop.line}",
        definition=f"https://github.com/o/{hop.func.source.dist}/blob/{SHA}/{hop.func.source.path}#L{hop.func.first_line}-L{hop.func.last_line}",
        pinned="tag" if hop.func.source.dist == "python" else "commit",
    )
    for hop in HOPS[1:4]
} | {HOPS[4]: HopLinks("https://docs.python.org/3.11/library/socket.html#socket.socket.send", "", "docs")}
EXCERPTS = {APP: APP_LINES, SIO: SIO_LINES, STDLIB: STDLIB_LINES, WS: WS_LINES}

WIRE = (
    WireLayer(
        "WebSocket",
        "81 1e",
        (
            WireField("FIN", "1", "last frame of the message"),
            WireField("opcode", "1", "text frame"),
            WireField("mask | len", "0 | 30", "server frames are not masked"),
        ),
    ),
    WireLayer("Engine.IO", "4", (WireField("type", "4", "message"),)),
    WireLayer(
        "Socket.IO",
        '2["reply",…]',
        (WireField("type", "2", "event"), WireField("data", '["reply",{"echo":"' + PAYLOAD + '"}]', "JSON `args`")),
    ),
)

EMIT = Chain("emit", "emit(): from a handler to the socket", "chat", HOPS, WIRE)
# The thread-start edge and a second lifeline crossing back, for the diagram.
RUN = Chain(
    "run",
    "Start <the> server & listen",
    "run",
    (
        HOPS[0],
        Hop(Func("socketio.server", "Server.emit", SIO, 2, 5), 4, "server", EDGE_THREAD_START, 30),
    ),
)
ANNOTATIONS = {
    "journey:emit": "How an **emit** reaches the socket.",
    "socketio.server:Server.emit": "Encodes the packet; see `Server._encode`.",
    "dispel.sample_app.app:on_chat": "The user's handler.",
}
