"""Tiny programs on raw greenlets (no gevent, no hub): switches the recorder must follow."""
import greenlet


def leaf(x):
    return x + 1


def child_body(x):
    y = leaf(x)
    back = greenlet.getcurrent().parent.switch(y)  # to the parent, in the middle of this call
    return leaf(back)


def ping_pong():
    """main -> child (new) -> main -> child (resumed) -> main (the child ends)."""
    g = greenlet.greenlet(child_body)
    first = g.switch(1)
    second = g.switch(first * 10)
    return first, second


def twice(tag):
    leaf(tag)
    greenlet.getcurrent().parent.switch()
    leaf(tag)


def two_children():
    """Two greenlets interleaved: each keeps its own stack."""
    a, b = greenlet.greenlet(twice), greenlet.greenlet(twice)
    a.switch(100)
    b.switch(200)
    a.switch()
    b.switch()
    return leaf(0)
