"""Wire bytes decoded layer by layer: HTTP, WebSocket frames (RFC 6455), Engine.IO v4 and Socket.IO v5 packets (pure)."""
from __future__ import annotations

import io
import json
import pickle
import re

from .model import WireField, WireLayer

# RFC 6455's own example values, which every client of dispel's uses so that the traced bytes
# repeat run to run: the handshake key of section 1.3 and the masking key of section 5.7.
WS_KEY = "dGhlIHNhbXBsZSBub25jZQ=="
MASK_KEY = bytes.fromhex("37fa213d")

OPCODES = {0: "continuation", 1: "text", 2: "binary", 8: "close", 9: "ping", 10: "pong"}
EIO_TYPES = {"0": "open", "1": "close", "2": "ping", "3": "pong", "4": "message", "5": "upgrade", "6": "noop"}
SIO_TYPES = {
    "0": "CONNECT",
    "1": "DISCONNECT",
    "2": "EVENT",
    "3": "ACK",
    "4": "CONNECT_ERROR",
    "5": "BINARY_EVENT",
    "6": "BINARY_ACK",
}


_RSV_MEANINGS = {0: "no extension in use", 4: "RSV1: this message is compressed (permessage-deflate, RFC 7692)"}


def printable(data: bytes) -> str:
    """Bytes as text a reader can see: ASCII as is, the rest as \\xNN."""
    return "".join(chr(b) if 32 <= b < 127 else f"\\x{b:02x}" for b in data)


def frame_layout(data: bytes) -> tuple[int, int] | None:
    """Where a WebSocket frame's payload begins (after any masking key) and how long it
    is; None while its header is incomplete."""
    if len(data) < 2:
        return None
    length, pos = data[1] & 0x7F, 2
    if length >= 126:
        pos = 4 if length == 126 else 10
        if len(data) < pos:
            return None
        length = int.from_bytes(data[2:pos], "big")
    return pos + (4 if data[1] & 0x80 else 0), length


def xor_mask(data: bytes, key: bytes) -> bytes:
    """RFC 6455 masking, its own inverse: byte i XOR key[i % 4]."""
    return bytes(b ^ key[i % 4] for i, b in enumerate(data))


def decode_frame(data: bytes) -> tuple[WireLayer, ...]:
    """A WebSocket frame and what it carries (Engine.IO, Socket.IO, JSON)."""
    layout = frame_layout(data)
    if layout is None:
        return ()
    b0, b1 = data[0], data[1]
    fin, opcode, masked = b0 >> 7, b0 & 0x0F, b1 >> 7
    start, length = layout
    pos = start - 4 * masked  # the end of the length fields
    fields = [
        WireField("FIN", str(fin), "final fragment of the message" if fin else "more fragments follow"),
        WireField("RSV1-3", str((b0 >> 4) & 0x7), _RSV_MEANINGS.get((b0 >> 4) & 0x7, "set by a negotiated extension")),
        WireField("opcode", f"0x{opcode:x}", OPCODES.get(opcode, "reserved") + " frame"),
        WireField("MASK", str(masked), "masked: client-to-server frames always are" if masked else "not masked: server-to-client frames never are"),
        WireField("payload length", str(length), "bytes of payload (7-bit length field)" if pos == 2 else f"bytes of payload (extended {8 * (pos - 2)}-bit length)"),
    ]
    payload = data[start:]
    if masked:
        key = data[pos:start]
        fields.append(WireField("masking key", key.hex(" "), "XORed with the payload, byte i with key[i % 4]"))
        payload = xor_mask(payload, key)
    layers = [WireLayer("WebSocket frame (RFC 6455)", printable(data[:start]), tuple(fields))]
    if opcode == 8:
        code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
        layers.append(WireLayer("WebSocket close", printable(payload), (WireField("status code", str(code), "1000 = normal closure" if code == 1000 else "see RFC 6455 section 7.4"),)))
        return tuple(layers)
    if opcode == 1 and (b0 >> 4) & 0x4:
        clear = inflate(payload)
        layers.append(WireLayer("permessage-deflate (RFC 7692)", printable(payload), (
            WireField("inflated", printable(clear), "raw DEFLATE, with the 00 00 ff ff the sender stripped put back")
            if clear is not None else
            WireField("compressed", payload.hex(" "), "refers back to earlier messages of the connection, so it cannot be inflated on its own"),
        )))
        if clear is None:
            return tuple(layers)
        payload = clear
    if opcode == 1:
        layers.extend(decode_engineio(payload.decode("utf-8", "replace")))
    elif opcode == 2:
        layers.append(WireLayer("binary payload", printable(payload), (
            WireField("bytes", payload[:64].hex(" ") + (" …" if len(payload) > 64 else ""),
                      "a binary message: over Socket.IO, the attachment a BINARY_EVENT's placeholder {\"_placeholder\": true, \"num\": N} stands for"),
        )))
    return tuple(layers)


def inflate(payload: bytes) -> bytes | None:
    """A permessage-deflate message inflated on its own, or None when it refers to earlier ones."""
    import zlib

    try:
        return zlib.decompressobj(-15).decompress(payload + b"\x00\x00\xff\xff")
    except zlib.error:
        return None


def decode_engineio(text: str) -> list[WireLayer]:
    if not text:
        return []
    kind = text[0]
    layers = [WireLayer("Engine.IO packet (v4)", text, (WireField("type", kind, EIO_TYPES.get(kind, "unknown")), WireField("data", text[1:], "the rest of the packet")))]
    if kind == "4" and text[1:]:
        layers.extend(decode_socketio(text[1:]))
    elif kind == "0":
        layers.append(WireLayer("JSON", text[1:], (WireField("handshake", text[1:], "session id, upgrades, ping interval and timeout"),)))
    return layers


def decode_payload(text: str, where: str) -> list[WireLayer]:
    """An Engine.IO long-polling payload: packets joined by the record separator \\x1e, each decoded."""
    packets = text.split("\x1e")
    fields = tuple(
        WireField(f"packet {n}", packet, EIO_TYPES.get(packet[:1], "unknown") + (" (then \\x1e, the record separator)" if n < len(packets) else ""))
        for n, packet in enumerate(packets, 1)
    )
    layers = [WireLayer(f"Engine.IO payload ({where})", printable(text.encode("utf-8")), fields)]
    for packet in packets:
        layers.extend(decode_engineio(packet))
    return layers


def decode_socketio(text: str) -> list[WireLayer]:
    kind, rest = text[0], text[1:]
    fields = [WireField("type", kind, SIO_TYPES.get(kind, "unknown"))]
    namespace = "/"
    if rest.startswith("/"):
        namespace, _, rest = rest.partition(",")
    fields.append(WireField("namespace", namespace, "the default namespace" if namespace == "/" else "a custom namespace"))
    ack = ""
    while rest[:1].isdigit():
        ack, rest = ack + rest[0], rest[1:]
    if ack:
        fields.append(WireField("ack id", ack, ACK_ID_MEANINGS.get(kind, ACK_ID_MEANINGS["2"])))
    layers = [WireLayer("Socket.IO packet (v5)", text, tuple(fields))]
    if rest:
        try:
            value = json.loads(rest)
        except ValueError:
            return layers
        jfields = []
        if isinstance(value, list) and value and kind in "25":
            jfields.append(WireField("event", json.dumps(value[0], ensure_ascii=False), "the event name"))
            for n, arg in enumerate(value[1:], 1):
                jfields.append(WireField(f"argument {n}", json.dumps(arg, ensure_ascii=False), "passed to the handler"))
        else:
            jfields.append(WireField("data", rest, "the packet's JSON data"))
        layers.append(WireLayer("JSON payload", rest, tuple(jfields)))
    return layers


def decode_http(data: bytes, role: str) -> tuple[WireLayer, ...]:
    """An HTTP/1.1 request or response head: the start line and each header."""
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    lines = head.split("\r\n")
    fields = [WireField("start line", lines[0], "method, target and version" if role == "request" else "version, status code and reason")]
    for line in lines[1:]:
        name, _, value = line.partition(":")
        fields.append(WireField(name.strip(), value.strip(), header_meaning(name, value, role)))
    return (WireLayer(f"HTTP {role}", head, tuple(fields)),)


# What an ack id says depends on the packet: an EVENT asks for an answer, an ACK (or BINARY_ACK) gives it.
ACK_ID_MEANINGS = {
    "2": "the sender waits for an ACK packet with this id",
    "5": "the sender waits for an ACK packet with this id",
    "3": "the id of the event this ACK answers",
    "6": "the id of the event this ACK answers",
}
# The Connection header's meaning depends on its value (a comma-separated list of options).
_CONNECTION_MEANINGS = {
    "upgrade": "Upgrade: this connection is to change protocol",
    "close": "the sender closes the connection after this message",
    "keep-alive": "the sender would keep the connection open for further requests",
}


def header_meaning(name: str, value: str, role: str = "request") -> str:
    """What an HTTP header says in a ``role`` ("request" or "response") head; for Connection,
    what its options say."""
    key = name.strip().lower()
    if key == "connection":
        options = [o.strip().lower() for o in value.split(",")]
        return "; ".join(_CONNECTION_MEANINGS[o] for o in options if o in _CONNECTION_MEANINGS)
    if role == "response" and key in _RESPONSE_HEADER_MEANINGS:
        return _RESPONSE_HEADER_MEANINGS[key]
    return _HEADER_MEANINGS.get(key, "")


# A header that means one thing in a request and another in a response: a request's Upgrade asks,
# the 101 response's Upgrade names the protocol the connection now speaks (RFC 9110, 7.8).
_RESPONSE_HEADER_MEANINGS = {
    "upgrade": "the protocol this connection switches to, right after this response",
}


_HEADER_MEANINGS = {
    "upgrade": "asks to switch this connection to another protocol",
    "sec-websocket-key": "a nonce from the client: base64 of 16 random bytes (dispel's client sends RFC 6455's example, so that traces repeat)",
    "sec-websocket-version": "the WebSocket protocol version (13 = RFC 6455)",
    "sec-websocket-accept": "base64(SHA-1(key + 258EAFA5-E914-47DA-95CA-C5AB0DC85B11)): proves the server read the key",
    "sec-websocket-extensions": "extensions offered or accepted (permessage-deflate compresses messages)",
    "host": "the server's name and port",
    "content-length": "the size of the body that follows the headers",
    "transfer-encoding": "chunked: the body follows as chunks, each preceded by its size in hex, ended by a zero-size chunk",
    "content-type": "the body's media type: Engine.IO payloads are text",
}


# ------------------------------------------------------------------ Redis (RESP2 / RESP3)

RESP_LINKS = "https://redis.io/docs/latest/develop/reference/protocol-spec/"
_RESP_AGGREGATES = {"*": "array", ">": "push", "%": "map", "~": "set"}


def parse_resp(data: bytes, pos: int = 0) -> tuple[object, int]:
    """One RESP value at ``pos``: (value, position after it). Bulk strings stay bytes; arrays
    and pushes are lists (a push is ("push", [...])). Raises ValueError on incomplete input."""
    end = data.index(b"\r\n", pos)
    kind, line = chr(data[pos]), data[pos + 1:end]
    pos = end + 2
    if kind in "+-":
        return line, pos
    if kind == ":":
        return int(line), pos
    if kind == "$":
        n = int(line)
        if n < 0:
            return None, pos
        if data[pos + n:pos + n + 2] != b"\r\n":
            # a trace's placeholders (<host-id@server-a>) changed the string's length: it
            # ends at the next CRLF (JSON messages hold none)
            end = data.find(b"\r\n", pos)
            if end < 0:
                raise ValueError("incomplete bulk string")
            return data[pos:end], end + 2
        return data[pos:pos + n], pos + n + 2
    if kind in _RESP_AGGREGATES:
        n = int(line) * (2 if kind == "%" else 1)
        items = []
        for _ in range(max(n, 0)):
            item, pos = parse_resp(data, pos)
            items.append(item)
        return (("push", items) if kind == ">" else items), pos
    raise ValueError(f"unknown RESP type {kind!r}")


def resp_values(data: bytes) -> list[object]:
    """Every complete RESP value in ``data`` (a read may hold several pushes)."""
    out, pos = [], 0
    while pos < len(data):
        try:
            value, pos = parse_resp(data, pos)
        except (ValueError, IndexError):
            break
        out.append(value)
    return out


def published(data: bytes) -> tuple[bytes, bytes] | None:
    """(channel, message) of a PUBLISH command written to Redis, or None."""
    values = resp_values(data)
    if len(values) == 1 and isinstance(values[0], list) and len(values[0]) == 3 and values[0][0] in (b"PUBLISH", b"publish"):
        return values[0][1], values[0][2]
    return None


def delivered(data: bytes) -> list[tuple[bytes, bytes]]:
    """(channel, message) of each ``message`` push (RESP3) or array (RESP2) a subscriber read."""
    out = []
    for v in resp_values(data):
        items = v[1] if isinstance(v, tuple) else v
        if isinstance(items, list) and len(items) == 3 and items[0] == b"message":
            out.append((items[1], items[2]))
    return out


class _PlainValues(pickle.Unpickler):
    """An unpickler that names no class or function: only plain values come out (dicts, lists,
    tuples, str, bytes, numbers, True, False, None), and no code of the pickle's choosing runs."""

    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"{module}.{name} is not a plain value")

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("a persistent id is not a plain value")


# A short str a trace's placeholder replaced (SHORT_BINUNICODE: its length byte counts the value
# before; ``<host-id@server-a>``, ``<sid-2>``): the length byte is made that of the placeholder.
_PLACEHOLDER_STR = re.compile(rb"\x8c[\x00-\xff](<[a-z]+[-@][a-z0-9@-]{0,40}>)")


def plain_pickle(data: bytes) -> object:
    """The plain values a pickle (protocol 2 or later) holds, read without running any code: a
    pickle that names a class or function is refused (None), as is anything else that does not
    load. A trace's placeholders in its strings are read as they are: the FRAME's size, counted
    before them, is left out, and a placeholder's length byte is its own."""
    if len(data) < 3 or data[0] != 0x80:
        return None
    body = data[:2] + data[11:] if data[2] == 0x95 else data  # FRAME: opcode and 8-byte size
    body = _PLACEHOLDER_STR.sub(lambda m: b"\x8c" + bytes([len(m.group(1))]) + m.group(1), body)
    try:
        return _PlainValues(io.BytesIO(body)).load()
    except Exception:  # noqa: BLE001 - any pickle that does not load as plain values is not shown
        return None


def queue_message(message: bytes) -> dict | None:
    """A message python-socketio's PubSubManager published: JSON (python-socketio 5.9 on), or a
    pickle of a dict (5.8's RedisManager, ``pickle.dumps``), read as plain values only; None for
    anything else."""
    try:
        value = json.loads(message)
    except ValueError:
        value = plain_pickle(message)
    return value if isinstance(value, dict) else None


def _json_layer(payload: bytes) -> list[WireLayer]:
    value = queue_message(payload)
    if value is None:
        return []
    fields = tuple(WireField(str(k), json.dumps(v, ensure_ascii=False, default=repr), "") for k, v in value.items())
    if payload[:1] == b"\x80":
        return [WireLayer("pickled dict (python-socketio 5.8's RedisManager, read as plain values)", printable(payload), fields)]
    return [WireLayer("JSON message (python-socketio's PubSubManager)", payload.decode("utf-8", "replace"), fields)]


def decode_publish(data: bytes) -> tuple[WireLayer, ...]:
    """A PUBLISH command as the publisher wrote it (RESP array of bulk strings), and its JSON."""
    found = published(data)
    if found is None:
        return ()
    channel, message = found
    layer = WireLayer(
        "Redis command (RESP)",
        printable(data),
        (
            WireField("*3", "array of 3", "a command is an array of bulk strings"),
            WireField("command", "PUBLISH", "post a message to a channel; Redis answers with how many subscribers got it"),
            WireField("channel", channel.decode("utf-8", "replace"), "Flask-SocketIO's default channel"),
            WireField("message", data.split(b"\r\n")[5].decode("latin-1") if data.count(b"\r\n") > 5 else "", "a bulk string: its length in bytes (counted before the trace put placeholders in), then the bytes"),
        ),
    )
    return (layer, *_json_layer(message))


def decode_delivery(data: bytes, message: bytes) -> tuple[WireLayer, ...]:
    """The ``message`` push a subscriber read (RESP3 ``>``) carrying ``message``, and its JSON."""
    for v in resp_values(data):
        items = v[1] if isinstance(v, tuple) else v
        if isinstance(items, list) and len(items) == 3 and items[0] == b"message" and items[2] == message:
            raw = data[data.index(b"\r\n$7\r\nmessage") - 2:]
            layer = WireLayer(
                "Redis push (RESP3)" if isinstance(v, tuple) else "Redis reply (RESP2)",
                printable(raw),
                (
                    WireField(">3" if isinstance(v, tuple) else "*3", "push of 3" if isinstance(v, tuple) else "array of 3",
                              "out-of-band data a subscribed connection receives"),
                    WireField("kind", "message", "a message published on a channel this connection subscribed to"),
                    WireField("channel", items[1].decode("utf-8", "replace"), "the channel it was published on"),
                    WireField("message", message.decode("utf-8", "replace")[:60] + ("…" if len(message) > 60 else ""), "the bytes the publisher sent, unchanged"),
                ),
            )
            return (layer,)
    return ()
