"""Tiny programs with the hand-offs the joiner must see: queues, thread starts, a buffer + Event."""
import queue
import threading
import time

# A hand-off is a wake-up only when the receiver waits first: the senders below
# give it that long to get there.
HEAD_START = 0.05


class Payload:
    def __init__(self, name):
        self.name = name


def produce(q, name):
    item = Payload(name)
    q.put(item)
    return item


def consume(item):
    return item.name.upper()


def produce_later(q, name):
    time.sleep(HEAD_START)
    return produce(q, name)


def producer_consumer():
    q = queue.Queue()
    t = threading.Thread(target=produce_later, args=(q, "hello"))
    t.start()
    got = q.get(timeout=5)
    t.join()
    return consume(got)


def work(n):
    return n * 2


def launch():
    t = threading.Thread(target=work, args=(21,))
    t.start()
    t.join()


def launch_in_turn():
    # each thread ends before the next starts: the next one often gets the same ident
    for _ in range(3):
        launch()


def handle(data):
    return len(data)


def reader(buffer, event):
    time.sleep(HEAD_START)
    data = "frame-bytes-" + "x" * 8
    buffer.append(data)
    event.set()


def buffer_event():
    buffer, event = [], threading.Event()
    t = threading.Thread(target=reader, args=(buffer, event))
    t.start()
    event.wait(timeout=5)
    t.join()
    return handle(buffer.pop(0))


def consumer_loop(q, done):
    item = q.get(timeout=5)
    consume(item)
    done.wait(timeout=5)


def two_consumers():
    q = queue.Queue()
    done = threading.Event()
    workers = [threading.Thread(target=consumer_loop, args=(q, done)) for _ in range(2)]
    for w in workers:
        w.start()
    time.sleep(HEAD_START)
    first = produce(q, "first")
    second = produce(q, "second")
    done.set()
    for w in workers:
        w.join()
    return first, second


def fails():
    raise ValueError("inside traced code")


def catches():
    try:
        fails()
    except ValueError:
        return "caught"


def counts(n):
    try:  # a handler, so that close() runs the frame (Python 3.13 skips it otherwise)
        for i in range(n):
            yield i
    finally:
        n = 0


def swallows():
    try:
        fails()
    except ValueError:
        pass


def tick(state):
    state["turns"] += 1
    return state["turns"]


def forever(state, started):
    """A background task that never ends: it is still running when the recording stops."""
    started.set()
    while not state["quit"]:
        time.sleep(0.001)
        tick(state)


def leaves_a_loop_running(state):
    started = threading.Event()
    t = threading.Thread(target=forever, args=(state, started), daemon=True)
    t.start()
    started.wait(5)
    while state["turns"] < 20:  # a few turns recorded before the recording stops
        time.sleep(0.001)
    return t


def turn(i):
    return consume(Payload(str(i)))


def loop(n):
    """A loop whose body is the same calls every time (record.fold keeps a count of them)."""
    total = 0
    for i in range(n):
        total += work(i)
        turn(i)
    return total


def drain(q, done):
    while True:
        item = q.get()
        if item is None:
            return
        done.append(consume(item))


def relay(n):
    """Two threads in step: the main thread puts n items, a consumer gets each after a wait."""
    q = queue.Queue()
    done = []
    t = threading.Thread(target=drain, args=(q, done))
    t.start()
    for i in range(n):
        time.sleep(0.0005)
        q.put(Payload(str(i)))
    q.put(None)
    t.join()
    return len(done)


def nested(n):
    """Loops of four lengths in turn: four shapes of one call, each repeated."""
    return [loop(i % 4) for i in range(n)]
