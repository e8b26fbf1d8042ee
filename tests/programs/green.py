"""Tiny gevent programs (imported after gevent's monkey-patching, see gevent_run): greenlets
that hand off through gevent's Queue, Event and a socket."""
import socket

import gevent
from gevent.event import Event
from gevent.queue import Queue


class Packet:
    def __init__(self, text):
        self.text = text


def write(q, out):
    packet = q.get()  # the writer waits first: the put wakes it
    out.append(packet.text)
    return packet


def handle(q, text):
    packet = Packet(text)
    q.put(packet)
    return packet


def queue_wakeup():
    q, out = Queue(), []
    writer = gevent.spawn(write, q, out)
    gevent.sleep(0)  # the writer runs until it waits in get()
    handler = gevent.spawn(handle, q, "hello")
    gevent.joinall([writer, handler])
    return out[0]


def waiter(event, seen):
    event.wait()
    seen.append("set")


def setter(event):
    event.set()


def event_wakeup():
    event, seen = Event(), []
    w = gevent.spawn(waiter, event, seen)
    gevent.sleep(0)
    s = gevent.spawn(setter, event)
    gevent.joinall([w, s])
    return seen


def reader(sock):
    return sock.recv(64)


def sender(sock, data):
    sock.sendall(data)


def socket_readable():
    a, b = socket.socketpair()
    r = gevent.spawn(reader, b)
    gevent.sleep(0)  # the reader blocks until a is written
    s = gevent.spawn(sender, a, b"frame")
    gevent.joinall([r, s])
    a.close()
    b.close()
    return r.value


def all_three():
    return queue_wakeup(), event_wakeup(), socket_readable()
