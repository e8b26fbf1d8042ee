"""dispel.run.pacer's pure core: requests and frames cut whole from any split of the stream,
the browser's key and mask replaced, the 101 answered for the browser's own key, the order
of a batch; and the proxy itself, forwarding to a server on 127.0.0.1."""
from __future__ import annotations

import base64
import socket
import threading
import zlib

import pytest
from dispel import wire
from dispel.run import pacer
from dispel.wire import MASK_KEY, WS_KEY

BROWSER_KEY = base64.b64encode(bytes(range(16))).decode()
BROWSER_MASK = bytes.fromhex("a1b2c3d4")


def masked_frame(text: bytes, key: bytes = BROWSER_MASK, b0: int = 0x81) -> bytes:
    assert len(text) < 126
    return bytes([b0, 0x80 | len(text)]) + key + bytes(c ^ key[i % 4] for i, c in enumerate(text))


POST = b"POST /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: 127.0.0.1:7000\r\nContent-Length: 2\r\n\r\n40"
GET = b"GET /chat HTTP/1.1\r\nHost: 127.0.0.1:7000\r\nReferer: http://127.0.0.1:7000/\r\nOrigin: http://localhost:70001\r\n\r\n"
UPGRADE = (
    "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: 127.0.0.1:7000\r\nUpgrade: websocket\r\n"
    f"Connection: Upgrade\r\nSec-WebSocket-Key: {BROWSER_KEY}\r\n\r\n"
).encode()


def feed_in_pieces(data: bytes, size: int) -> list[pacer.Unit]:
    stream = pacer.RequestStream(7000, 5000)
    units = []
    for i in range(0, len(data), size):
        units += stream.feed(data[i : i + size])
    return units + stream.feed(b"")


@pytest.mark.parametrize("size", [1, 2, 7, 64, 10_000])
def test_units_are_whole_however_the_stream_is_split(size):
    units = feed_in_pieces(POST + GET + UPGRADE + masked_frame(b"2probe") + masked_frame(b"5"), size)
    kinds = [u.data.split(b" ", 1)[0] if u.data[:1].isalpha() else u.data[:2] for u in units]
    assert kinds == [b"POST", b"GET", b"GET", b"\x81\x86", b"\x81\x81", b""]
    assert units[0].data.endswith(b"\r\n\r\n40")  # the body travels with its headers


@pytest.mark.parametrize(
    "line, expected",
    [
        ("Host: 127.0.0.1:7000", "Host: 127.0.0.1:5000"),
        ("Referer: http://127.0.0.1:7000/", "Referer: http://127.0.0.1:5000/"),
        ("Origin: http://localhost:70001", "Origin: http://localhost:70001"),  # another port: left alone
        ("User-Agent: x 127.0.0.1:7000", "User-Agent: x 127.0.0.1:7000"),  # not an address header
    ],
)
def test_the_proxys_port_becomes_the_servers_in_address_headers(line, expected):
    (unit, _) = pacer.RequestStream(7000, 5000).feed(f"GET / HTTP/1.1\r\n{line}\r\n\r\n".encode()) + [None]
    assert unit.data.decode().split("\r\n")[1] == expected


def test_upgrade_request_carries_the_fixed_key_and_remembers_the_browsers():
    (unit,) = pacer.RequestStream(7000, 5000).feed(UPGRADE)
    assert f"Sec-WebSocket-Key: {WS_KEY}".encode() in unit.data and BROWSER_KEY.encode() not in unit.data
    assert unit.browser_key == BROWSER_KEY


@pytest.mark.parametrize("text", [b"2probe", b"5", b"x" * 125, b""])
def test_remask_keeps_the_message_and_uses_the_fixed_mask(text):
    frame = masked_frame(text)
    again = pacer.remask(frame, MASK_KEY)
    assert again[2:6] == MASK_KEY and len(again) == len(frame)
    layers = wire.decode_frame(again)
    assert layers[0].fields[-1].value == MASK_KEY.hex(" ")
    assert bytes(c ^ MASK_KEY[i % 4] for i, c in enumerate(again[6:])) == text


def test_a_compressed_frame_is_remasked_byte_for_byte_and_still_inflates():
    deflate = zlib.compressobj(wbits=-15)
    payload = deflate.compress(b"2probe") + deflate.flush(zlib.Z_SYNC_FLUSH)
    frame = masked_frame(payload[:-4], b0=0xC1)  # RSV1: permessage-deflate drops the 00 00 ff ff tail
    layers = wire.decode_frame(pacer.remask(frame, MASK_KEY))
    assert [layer.layer for layer in layers][:3] == ["WebSocket frame (RFC 6455)", "permessage-deflate (RFC 7692)", "Engine.IO packet (v4)"]
    assert layers[2].raw == "2probe"


def test_unmasked_and_partial_frames_pass_or_wait():
    assert pacer.remask(b"\x81\x016", MASK_KEY) == b"\x81\x016"
    assert pacer.frame_size(b"\x81") is None
    assert pacer.frame_size(b"\x81\xfe\x01") is None  # 16-bit length not all there yet
    assert pacer.frame_size(b"\x81\xfe\x01\x00") == 2 + 2 + 4 + 256


def test_the_101_answers_the_browsers_own_key():
    response = pacer.ResponseStream()
    assert response.feed(b"HTTP/1.1 200 OK\r\n\r\nbody") == b"HTTP/1.1 200 OK\r\n\r\nbody"
    response.expect_upgrade(BROWSER_KEY)
    head = f"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: {pacer.accept_for(WS_KEY)}\r\n\r\n".encode()
    assert response.feed(head[:20]) == b""  # held until the head is complete
    out = response.feed(head[20:] + b"\x81\x016")
    assert f"Sec-WebSocket-Accept: {pacer.accept_for(BROWSER_KEY)}\r\n\r\n".encode() in out and out.endswith(b"\x81\x016")
    assert response.feed(b"more") == b"more"  # only the first head is rewritten


def test_accept_is_rfc_6455s_example():
    assert pacer.accept_for("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


@pytest.mark.parametrize(
    "heads, first",
    [
        ([(b"POST /", 0), (b"GET /?transport=websocket", 1), (b"GET /?transport=polling", 2)], 2),
        ([(b"\x81\x86", 0), (b"GET /", 1)], 1),
        ([(b"GET /", 3), (b"GET /", 1)], 1),  # equal bytes: the lower connection number
    ],
)
def test_a_batch_goes_in_the_order_of_its_bytes(heads, first):
    order = pacer.batch_order({n: [pacer.Unit(data)] for data, n in heads})
    assert order[0][0] == first
    assert [u.data for _, u in order] == sorted(data for data, _ in heads)


def test_a_connections_own_units_keep_their_order_in_a_batch():
    batch = {0: [pacer.Unit(b"z-first"), pacer.Unit(b"a-second")], 1: [pacer.Unit(b"m")]}
    assert [(n, u.data) for n, u in pacer.batch_order(batch)] == [(1, b"m"), (0, b"z-first"), (0, b"a-second")]


def test_the_proxy_forwards_to_a_server_on_localhost_and_back():
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    got: list[bytes] = []

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            buf = b""
            while not buf.endswith(b"\r\n\r\n40"):
                buf += conn.recv(1024)
            got.append(buf)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK")

    threading.Thread(target=serve, daemon=True).start()
    proxy = pacer.Pacer(port, pace=0.0, gather=0.01)
    proxy.start()
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as browser:
        request = POST.replace(b"7000", str(proxy.port).encode())
        for i in range(0, len(request), 5):  # in dribs: the server still gets it whole
            browser.sendall(request[i : i + 5])
        answer = b""
        while not answer.endswith(b"OK"):
            answer += browser.recv(1024)
    server.close()
    assert got == [request.replace(str(proxy.port).encode(), str(port).encode())]


def test_a_polling_payload_is_split_at_the_record_separator():
    layers = wire.decode_payload('42["welcome",{}]\x1e40{"sid":"x"}', "GET response body")
    assert layers[0].layer == "Engine.IO payload (GET response body)"
    assert [f.value for f in layers[0].fields] == ['42["welcome",{}]', '40{"sid":"x"}']
    assert "record separator" in layers[0].fields[0].meaning and "record separator" not in layers[0].fields[1].meaning
    assert [layer.layer for layer in layers[1:]].count("Engine.IO packet (v4)") == 2


def test_nothing_is_forwarded_while_an_upgrade_waits_for_its_101():
    """The server's answer to an upgrade starts a thread at once: a request forwarded before
    the 101 is back would race it (which thread the server starts first)."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    events: list[str] = []

    def serve() -> None:
        first, _ = server.accept()
        buf = b""
        while not buf.endswith(b"\r\n\r\n"):
            buf += first.recv(1024)
        events.append("upgrade")
        server.settimeout(0.3)  # a second connection within 0.3 s would be forwarded too early
        try:
            early, _ = server.accept()
            events.append("accepted early")
            early.close()
        except TimeoutError:
            pass
        events.append("101")
        first.sendall(f"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: {pacer.accept_for(WS_KEY)}\r\n\r\n".encode())
        server.settimeout(5)
        second, _ = server.accept()
        events.append("accepted")
        second.close()
        first.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    proxy = pacer.Pacer(port, pace=0.0, gather=0.05)
    proxy.start()
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as ws, \
            socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as other:
        ws.sendall(UPGRADE)  # one batch: the upgrade goes first (its bytes sort first)...
        other.sendall(POST)  # ...and this waits for the 101
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            head += ws.recv(1024)
        thread.join(5)
    server.close()
    assert f"Sec-WebSocket-Accept: {pacer.accept_for(BROWSER_KEY)}".encode() in head
    assert events == ["upgrade", "101", "accepted"]


def test_the_browsers_end_waits_until_the_server_has_closed_its_side():
    """werkzeug looks for more data for 10 ms before it closes: the browser's end must not
    reach it then, however soon the browser closes."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    seen: list[bytes | str] = []

    def serve() -> None:
        conn, _ = server.accept()
        buf = b""
        while not buf.endswith(b"\r\n\r\n40"):
            buf += conn.recv(1024)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nOK")
        conn.settimeout(0.5)  # the browser closes at once; its end is held back meanwhile
        try:
            seen.append(conn.recv(1024))
        except TimeoutError:
            seen.append("nothing")
        conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    proxy = pacer.Pacer(port, pace=0.0, gather=0.01)
    proxy.start()
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as browser:
        browser.sendall(POST)
        answer = b""
        while not answer.endswith(b"OK"):
            answer += browser.recv(1024)
        browser.shutdown(socket.SHUT_WR)
        thread.join(5)
        assert browser.recv(1024) == b""  # the server's end still reaches the browser
    server.close()
    assert seen == ["nothing"]
