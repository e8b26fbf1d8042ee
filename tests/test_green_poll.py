"""gevent mode and long-polling, on small frozen traces: an emit's packet that a long-polling GET
took from Engine.IO's queue is followed by that packet's identity (gevent's Queue.put and get are
left out of the trace), whether a wake-up was drawn or the GET arrived after the put; a long-poll
body after a head gevent's pywsgi wrote from a bytearray; a request head's parse between two of a
greenlet's top calls. The own-app test on taskboard in gevent mode is in test_gevent.py."""
from __future__ import annotations

import pytest
from dispel.chains import derive_finders, derive_packets, makers, routes
from dispel.chains.graph import JourneyError, TraceGraph
from dispel.check import integrity
from dispel.model import EDGE_CALL, EDGE_DATA, EDGE_ENTRY, EDGE_RETURN
from tiny_traces import trace

SEND = "engineio.socket:Socket.send"
POLL = "engineio.socket:Socket.poll"
ENCODE = "engineio.packet:Packet.encode"
PAYLOAD = "engineio.payload:Payload.encode"
SENDALL = "_socket:socket.sendall"
MOVED = '42["moved",1]'
HEAD = b"POST /socket.io/?transport=polling&EIO=4&sid=<sid-2> HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 8\r\n\r\n42[\"go\"]"


def green(wake: bool = False, hub: bool = True):
    """ann on WebSocket (socket 6, her writer woken by the put), bob long-polling (socket 5): the
    handler's emit sends one packet (token 9) to both. Bob's GET greenlet polls twice: first a
    packet of another emit (token 8, the same text), then this one, which it took without a wake-up
    (or, with ``wake``, after one). A poll of another socket on a third greenlet encoded an equal
    packet first (token 7), woken by a later call of the handler: neither it nor bob's first poll
    took this packet."""
    threads = {
        "request-3": [  # bob's GET greenlet: each request's top call is entered from gevent's hidden server
            ("", 0, "flask.app:Flask.__call__", (), "<list>"),
            ("", 1, POLL, (("self", "<Socket>", 5),), ("<list>", 20)),
            ("", 1, ENCODE, (("self", "<Packet>", 8),), MOVED),
            ("", 0, SENDALL, (("data", MOVED.encode()),), "None"),
            ("get", 0, "flask.app:Flask.__call__", (), "<list>"),
            ("poll", 1, POLL, (("self", "<Socket>", 5),), ("<list>", 21)),
            ("ok", 1, "engineio.base_server:BaseServer._ok", (), "<dict>"),
            ("payload", 2, PAYLOAD, (("self", "<Payload>", 22),), MOVED),
            ("encode", 3, ENCODE, (("self", "<Packet>", 9),), MOVED),
            ("head", 0, SENDALL, (("data", "<bytearray>"),), "None"),
            ("body", 0, SENDALL, (("data", MOVED.encode()),), "None"),
        ],
        "request-4": [  # another client's GET, which encoded an equal packet
            ("", 0, "flask.app:Flask.__call__", (), "<list>"),
            ("r4-poll", 1, POLL, (("self", "<Socket>", 4),), ("<list>", 23)),
            ("", 1, ENCODE, (("self", "<Packet>", 7),), MOVED),
            ("", 0, SENDALL, (("data", MOVED.encode()),), "None"),
        ],
        "handler-1": [
            ("on", 0, "app:on_move", (), "None"),
            ("emit", 1, "flask_socketio:SocketIO.emit", (("event", "moved"),), "None"),
            ("made", 2, "engineio.packet:Packet.__init__", (("self", "<Packet>", 9), ("data", '2["moved",1]')), "None"),
            ("to-ann", 2, SEND, (("self", "<Socket>", 6), ("pkt", "<Packet>", 9)), "None"),
            ("to-bob", 2, SEND, (("self", "<Socket>", 5), ("pkt", "<Packet>", 9)), "None"),
            ("later", 1, "app:notify_board", (), "None"),
        ],
        "eio-writer-2": [
            ("", 0, "engineio.socket:Socket._websocket_handler.<locals>.writer", (), None),
            ("ann-poll", 1, POLL, (("self", "<Socket>", 6),), "<list>"),
            ("", 1, ENCODE, (("self", "<Packet>", 9),), MOVED),
            ("frame", 1, "simple_websocket.ws:Base.send", (("data", MOVED),), "None"),
            ("ann-sink", 2, "_socket:socket.send", (("data", b"\x81\x0d" + MOVED.encode()),), "13"),
        ],
    }
    if hub:
        threads["hub"] = [("", 0, "gevent.hub:Hub.run", (), None)]
    wakeups = [("to-ann", "ann-poll"), ("later", "r4-poll")] + ([("to-bob", "poll")] if wake else [])
    t, at = trace(threads, wakeups)
    return TraceGraph(t), at


@pytest.mark.parametrize("wake", [False, True], ids=["arrived-after-the-put", "woken-by-the-put"])
def test_bob_s_get_took_the_packet_the_emit_sent_him(wake):
    g, at = green(wake)
    # the take: the poll of bob's socket before the encode of that very packet, not his first poll
    assert routes.green_takes(g, at["to-bob"], "request-3") == [at["poll"]]
    assert routes.green_take(g, at["to-bob"], "request-3", before=at["poll"]) is None  # not before the poll
    assert routes.green_takes(g, at["to-bob"], "request-4") == []  # another socket's poll, an equal packet
    assert routes.green_takes(g, at["to-ann"], "request-3") == []  # ann's socket: not bob's GET
    # one send per session, each on the greenlet that took the packet (not request-4's, which a
    # later hand-off of the handler reaches, and which sent an equal packet)
    assert derive_finders.recipients(g, at["emit"], (MOVED[2:6],)) == [at["body"], at["ann-sink"]]
    route = routes.handoff_route(g, at["on"], at["body"])
    assert route == ([(at["to-bob"], at["poll"], "wake-up")] if wake else [(at["to-bob"], at["poll"], EDGE_DATA)])
    steps = routes.walk(g, [routes.value_trail(g, at["on"], at["body"], (MOVED[2:6],))])
    assert (at["poll"], route[0][2]) in steps and steps[-1] == (at["body"], EDGE_ENTRY)


def test_without_a_wake_up_no_hand_off_but_the_take_leads_to_bob():
    g, at = green()
    with pytest.raises(JourneyError):
        routes.thread_route(g, at["on"], at["body"])
    # from the send to bob: its take (the socket it passes on, returned by other calls, is no hand-off)
    assert routes.connect(g, at["to-bob"], at["payload"])[0] == (at["poll"], EDGE_DATA)
    # from the packet made: the first call that passed it on to bob's socket
    assert routes.data_route(g, at["made"], at["body"]) == [(at["to-bob"], at["poll"], EDGE_DATA)]
    with pytest.raises(JourneyError):
        routes.green_route(g, at["to-ann"], at["body"])


def test_threading_traces_keep_their_own_routes():
    # no hub: not a gevent trace; Socket.send is no put there (queue.Queue.put is)
    g, at = green(hub=False)
    assert routes.green_takes(g, at["to-bob"], "request-3") == [at["poll"]]  # the finder itself does not look
    assert not routes.is_put(g, at["to-bob"])
    with pytest.raises(JourneyError):
        routes.put_route(g, at["on"], at["body"])


def test_integrity_proves_the_take_by_the_packet_the_poll_s_greenlet_then_encoded():
    g, at = green()
    facts = integrity._Facts(g.trace, ())
    ev = g.trace.events
    assert facts.green_take(ev[at["to-bob"]], ev[at["poll"]]) == 9
    assert facts.green_take(ev[at["to-ann"]], ev[at["poll"]]) == 0  # another socket's send
    first_poll = at["get"] - 3
    assert ev[first_poll].func == POLL and facts.green_take(ev[at["to-bob"]], ev[first_poll]) == 0  # took token 8
    assert integrity._Facts(green(hub=False)[0].trace, ()).green_take(ev[at["to-bob"]], ev[at["poll"]]) == 0


def test_a_body_after_a_head_pywsgi_wrote_from_a_bytearray_is_the_payload_engineio_encoded():
    g, at = green()
    assert derive_packets._is_body(g, at["body"], MOVED.encode())
    assert not derive_packets._is_body(g, at["body"], b'42["other"]')
    assert at["body"] in derive_packets._payloads(g, 1, lambda p: p.startswith(b'42["moved"'))
    assert not derive_packets._is_body(green(hub=False)[0], at["body"], MOVED.encode())  # threading: the head shows


def test_a_request_head_parsed_between_two_top_calls_of_a_greenlet_is_put_on_the_chain():
    t, at = trace({
        "request-4": [
            ("read", 0, "socket:SocketIO.readinto", (), "8"),
            ("recv", 1, "_socket:socket.recv_into", (), HEAD),
            ("headers", 0, "http.client:parse_headers", (), ("<Message>", 3)),
            ("parse", 1, "email.parser:Parser.parsestr", (("text", "Host: 127.0.0.1\r\nContent-Length: 8\r\n\r\n"),), ("<Message>", 3)),
            ("app", 0, "flask.app:Flask.__call__", (), "<list>"),
            ("post", 1, "engineio.socket:Socket.handle_post_request", (), "None"),
        ],
        "hub": [("", 0, "gevent.hub:Hub.run", (), None)],
    })
    g = TraceGraph(t)
    steps, _ = makers.walk_with_producers(g, [[at["recv"], at["post"]]])
    # the parse (a top call of its own, entered from gevent's hidden server) between the read and the app
    assert steps == [(at["recv"], EDGE_ENTRY), (at["read"], EDGE_RETURN), (at["headers"], EDGE_ENTRY), (at["parse"], EDGE_CALL),
                     (at["headers"], EDGE_RETURN), (at["app"], EDGE_ENTRY), (at["post"], EDGE_CALL)]
