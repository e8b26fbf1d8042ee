"""Tiny programs whose values decide what is sent: a sibling call that builds the value,
a generator that yields it, two candidates of which one made it, and a long poll that
waits, is woken, then drains without blocking."""
import queue
import threading
import time

HEAD_START = 0.05  # the poller is given this long to block before the sender puts


def sink(data):
    return len(data)


def encode(name):
    return "2" + name


def recipients(room):
    return [sid for sid in ("a", "b", "c") if sid != room]


def sibling_producer():
    """The value is made by a call beside the path (encode), then passed to the sink."""
    text = encode("hello")
    return sink(text)


def events(raw):
    for part in raw.split(","):
        yield "event:" + part


def generator_consumer():
    """A generator's yield, consumed by a loop, decides what reaches the sink."""
    sent = 0
    for ev in events("a,b"):
        sent += sink(ev)
    return sent


def two_candidates():
    """Two calls return text; only the second one's value is what the sink gets."""
    decoy = encode("decoy")
    chosen = encode("chosen")
    sink(chosen)
    return decoy


def poll(q):
    packets = [q.get(timeout=5)]
    while True:
        try:
            packets.append(q.get(block=False))
        except queue.Empty:
            break
    return sink("".join(packets))


def send_later(q):
    time.sleep(HEAD_START)
    q.put("one")


def long_poll():
    """A poll blocks in get(), is woken by a put, then drains with get(block=False)."""
    q = queue.Queue()
    t = threading.Thread(target=send_later, args=(q,))
    t.start()
    n = poll(q)
    t.join()
    return n
