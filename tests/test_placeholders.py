"""Placeholders: facts of the trace filled into annotations by render, and clear errors where they cannot be."""
from __future__ import annotations

import pytest
from dispel.model import (
    EDGE_CALL,
    EDGE_ENTRY,
    EDGE_WAKE,
    Chain,
    DispelError,
    Func,
    Hop,
    Source,
    WireLayer,
)
from dispel.render import placeholders as ph
from dispel.render.markup import inline_code
from dispel.render.pages import hop_annotation

WS = Source("wsproto", "1.3.2", "wsproto/frame_protocol.py")
C = Source("builtin", "3.11.7", "Modules/socketmodule.c")
SER = Func("wsproto.frame_protocol", "FrameProtocol._serialize_frame", WS, 645, 698)
SEND = Func("_socket", "socket.send", C, 0, 0)
RECV = Func("_socket", "socket.recv", C, 0, 0)
PMD = Func("wsproto.extensions", "PerMessageDeflate.frame_inbound_payload_data", WS, 220, 231)


def hops(first: bytes, second: bytes) -> tuple[Hop, ...]:
    return (
        Hop(RECV, 0, "ws-reader-1", EDGE_ENTRY, 1, value=f"return = b{first.decode('latin-1')!r}"),
        Hop(SER, 698, "request-5", EDGE_WAKE, 2, line_text="return bytearray(header + payload)"),
        Hop(SEND, 0, "request-5", EDGE_CALL, 3, value=f"data = b{second.decode('latin-1')!r}"),
    )


CHAIN = Chain("upgrade", "t", "browser", hops(b"\xc1\x887\xfa!=", b"\xc1\x082.(\xcaOJ\x05\x00"))
PLAIN = Chain("upgrade-python", "t", "chat", hops(b"\x81\x867\xfa!=", b"\x81\x063probe"))
POLLING = Chain("polling", "t", "browser", (Hop(SER, 698, "request-4", EDGE_ENTRY, 1, line_text="x = 1"),))


@pytest.mark.parametrize(
    ("text", "chain", "index", "filled"),
    [
        ("on {{thread}}", CHAIN, 1, "on `request-5`"),
        ("wakes {{nextthread}}", CHAIN, 0, "wakes `request-5`"),
        ("line {{lineno}}: {{line}}", CHAIN, 1, "line 698: `return bytearray(header + payload)`"),
        ("see {{hop:_socket:socket.send}}", CHAIN, None, "see [hop 3](#hop-3)"),
        ("then {{next:_socket:socket.send}}", CHAIN, 1, "then [hop 3](#hop-3)"),
        ("`{{frame:byte0}}` `{{frame:byte1}}` rsv1={{frame:rsv1}} op={{frame:opcode}} n={{frame:length}}", CHAIN, 1, "`0xc1` `0x08` rsv1=1 op=0x1 n=8"),
        ("read `{{frame:byte0}}`/`{{frame:byte1}}` mask={{frame:mask}}", CHAIN, 0, "read `0xc1`/`0x88` mask=1"),
        ("{{frame:byte0}}", PLAIN, 1, "0x81"),
        ("deflate {{deflate?was|was not}} negotiated", CHAIN, None, "deflate was negotiated"),
        ("deflate {{deflate?was|was not}} negotiated", PLAIN, 2, "deflate was not negotiated"),
        ("{{ thread }} and {{thread}}", PLAIN, 0, "`ws-reader-1` and `ws-reader-1`"),
        # a frame named by the function of its socket call: also in a summary
        ("`{{frame:byte0@_socket:socket.send}}`, {{frame:length@_socket:socket.send}} bytes", CHAIN, None, "`0xc1`, 8 bytes"),
        ("{{frame:byte1@_socket:socket.recv#1}} of {{frame:size@_socket:socket.recv}}", PLAIN, None, "0x86 of 6"),
        ("{{frame:size}}", PLAIN, 2, "8"),
        ("{{thread:_socket:socket.send}} after {{thread:_socket:socket.recv#1}}", CHAIN, None, "`request-5` after `ws-reader-1`"),
    ],
)
def test_fill(text, chain, index, filled):
    assert ph.fill(text, chain, index, "m:f", inline_code) == filled


def test_a_deflate_hop_proves_negotiation_even_without_rsv1():
    chain = Chain("x", "t", "s", PLAIN.hops + (Hop(PMD, 230, "ws-reader-1", EDGE_CALL, 4),))
    assert ph.deflate_negotiated(chain) is True
    assert ph.deflate_negotiated(POLLING) is None


def test_the_101_response_tells_whether_deflate_was_accepted():
    def sent(response: bytes) -> Chain:
        return Chain("handshake", "t", "s", (Hop(SEND, 0, "request-1", EDGE_ENTRY, 1, value=f"data = b{response.decode('latin-1')!r}"),))

    plain = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    deflate = plain[:-2] + b"Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n"
    assert ph.deflate_negotiated(sent(plain)) is False
    assert ph.deflate_negotiated(sent(deflate)) is True
    assert ph.fill("{{deflate?did|did not}}", sent(plain), 0, "m:f") == "did not"


def test_the_page_wire_counts_as_a_frame():
    chain = Chain("x", "t", "s", POLLING.hops, (WireLayer("WebSocket frame (RFC 6455)", "\\xc1\\x03", ()),))
    assert ph.page_frames(chain) == [b"\xc1\x03"]
    assert ph.deflate_negotiated(chain) is True


@pytest.mark.parametrize(
    ("text", "chain", "index", "error"),
    [
        ("{{threads}}", CHAIN, 1, r"^annotation m:f on upgrade hop 2: \{\{threads\}\} is not a placeholder \(known: thread, "),
        ("{{hop:m:nothere}}", CHAIN, 1, r"hop 2: \{\{hop:m:nothere\}\} cannot be filled: m:nothere is not a hop on this page"),
        ("{{next:_socket:socket.recv}}", CHAIN, 1, r"no hop of _socket:socket.recv follows"),
        ("{{thread}}", CHAIN, None, r"^annotation m:f on upgrade \(summary\): \{\{thread\}\} cannot be filled in a journey summary"),
        ("{{frame:byte0}}", POLLING, 0, r"on polling hop 1: \{\{frame:byte0\}\} cannot be filled: no socket call"),
        ("{{frame:byte9}}", CHAIN, 1, r"names no frame field"),
        ("{{deflate?a|b}}", POLLING, 0, r"cannot be filled: the page has no WebSocket frame to tell"),
        ("{{lineno}}", CHAIN, 2, r"a C function has no source line"),
        ("{{nextthread}}", CHAIN, 2, r"this is the last hop"),
        ("{{line}}", CHAIN, 0, r"the hop has no executed line text"),
        ("{{thread:x}}", CHAIN, 1, r"cannot be filled: the page has 0 hop\(s\) of x"),
        ("{{thread:_socket:socket.send#x}}", CHAIN, None, r"cannot be filled: the page has 1 hop\(s\) of _socket:socket.send"),
        ("{{frame:byte0@_socket:socket.send#2}}", CHAIN, None, r"\(summary\): \{\{frame:byte0@_socket:socket.send#2\}\} cannot be filled: the page has 1 hop\(s\) of _socket:socket.send"),
        ("{{frame:byte0@m:nothere}}", CHAIN, None, r"the page has 0 hop\(s\) of m:nothere"),
        ("{{frame:byte9@_socket:socket.send}}", CHAIN, None, r"names no frame field"),
        ("{{frame:byte0@_socket:socket.send}}", POLLING, None, r"the page has 0 hop"),
        ("{{frame:byte0@wsproto.frame_protocol:FrameProtocol._serialize_frame}}", POLLING, None, r"hop 1 carries no WebSocket frame"),
        ("{{hop}}", CHAIN, 1, r"is malformed"),
        ("{{deflate}}", CHAIN, 1, r"is malformed"),
        ("{{ thread", CHAIN, 1, None),  # not a placeholder at all: left as written
    ],
)
def test_fill_errors_name_annotation_journey_and_hop(text, chain, index, error):
    if error is None:
        assert ph.fill(text, chain, index, "m:f") == text
        return
    with pytest.raises(DispelError, match=error):
        ph.fill(text, chain, index, "m:f")


def test_render_selects_the_most_specific_text_and_fills_it():
    texts = {SER.key: "general on {{thread}}", f"{SER.key}@upgrade": "on upgrade, `{{frame:byte0}}`"}
    assert hop_annotation(CHAIN, 1, texts) == "on upgrade, `0xc1`"
    assert hop_annotation(PLAIN, 1, texts) == "general on `request-5`"
    assert hop_annotation(PLAIN, 0, texts) is None
