"""dispel.pins.permalinks: URL formats per forge, commit vs tag pins, C functions, refusals."""
from __future__ import annotations

import pytest
from dispel.model import DispelError, FilePin, Func, Lock, Pin, Source
from dispel.pins import permalinks
from dispel.pins.pinning import stdlib_pin

COMMIT = "0123456789abcdef0123456789abcdef01234567"  # an input, not something the code computed
BLOB = "f" * 40


def make_pin(forge: str = "github", pinned: str = "commit", commit: str = COMMIT) -> Pin:
    files = (
        FilePin("engineio/socket.py", "src/engineio/socket.py", BLOB),
        FilePin("engineio/_version.py", "", BLOB),
    )
    return Pin("python-engineio", "4.13.3", forge, "miguelgrinberg/python-engineio", "v4.13.3", commit, pinned, files)


@pytest.mark.parametrize(
    ("forge", "line", "span"),
    [
        (
            "github",
            f"https://github.com/miguelgrinberg/python-engineio/blob/{COMMIT}/src/engineio/socket.py#L42",
            f"https://github.com/miguelgrinberg/python-engineio/blob/{COMMIT}/src/engineio/socket.py#L40-L57",
        ),
        (
            "gitlab",
            f"https://gitlab.com/miguelgrinberg/python-engineio/-/blob/{COMMIT}/src/engineio/socket.py#L42",
            f"https://gitlab.com/miguelgrinberg/python-engineio/-/blob/{COMMIT}/src/engineio/socket.py#L40-57",
        ),
        (
            "bitbucket",
            f"https://bitbucket.org/miguelgrinberg/python-engineio/src/{COMMIT}/src/engineio/socket.py#lines-42",
            f"https://bitbucket.org/miguelgrinberg/python-engineio/src/{COMMIT}/src/engineio/socket.py#lines-40:57",
        ),
    ],
)
def test_format_table(forge: str, line: str, span: str) -> None:
    pin = make_pin(forge)
    assert permalinks.permalink(pin, "engineio/socket.py", 42) == line
    assert permalinks.permalink_range(pin, "engineio/socket.py", 40, 57) == span


def test_single_line_range_is_a_line_link() -> None:
    pin = make_pin()
    assert permalinks.permalink_range(pin, "engineio/socket.py", 7, 7) == permalinks.permalink(
        pin, "engineio/socket.py", 7
    )


def test_stdlib_links_to_the_release_tag_and_says_so() -> None:
    pin = stdlib_pin("3.11.7", {"Lib/socketserver.py": BLOB})
    assert (pin.pinned, pin.commit, pin.tag) == ("tag", "", "v3.11.7")
    assert (
        permalinks.permalink(pin, "Lib/socketserver.py", 215)
        == "https://github.com/python/cpython/blob/v3.11.7/Lib/socketserver.py#L215"
    )


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: permalinks.permalink(make_pin(), "engineio/_version.py", 1), "unpinned"),
        (lambda: permalinks.permalink(make_pin(), "engineio/nope.py", 1), "not in the lock"),
        (lambda: permalinks.permalink(make_pin(), "engineio/socket.py", 0), "not a line number"),
        (lambda: permalinks.permalink_range(make_pin(), "engineio/socket.py", 9, 3), "not a range"),
        (lambda: permalinks.permalink(make_pin(commit="main"), "engineio/socket.py", 1), "not a 40-hex"),
        (lambda: permalinks.permalink(make_pin(forge="sourcehut"), "engineio/socket.py", 1), "unknown forge"),
        (lambda: permalinks.permalink(make_pin(pinned="branch"), "engineio/socket.py", 1), "no usable pin"),
    ],
)
def test_refusals_are_clear(call, message: str) -> None:
    with pytest.raises(DispelError, match=message):
        call()


@pytest.mark.parametrize("method", ["send", "sendall", "recv", "recv_into", "accept", "bind", "listen"])
@pytest.mark.parametrize("module", ["socket", "_socket"])
def test_socket_c_functions_link_to_the_docs(module: str, method: str) -> None:
    assert (
        permalinks.c_doc_link(module, f"socket.{method}", "3.11.7")
        == f"https://docs.python.org/3.11/library/socket.html#socket.socket.{method}"
    )


def test_unknown_c_function_has_no_link() -> None:
    assert permalinks.c_doc_link("_thread", "lock.acquire", "3.11.7") is None


def test_link_dispatches_on_the_kind_of_code() -> None:
    lock = Lock(stdlib_pin("3.11.7", {"Lib/socketserver.py": BLOB}), (make_pin(),))
    engine = Func("engineio.socket", "Socket.send", Source("python-engineio", "4.13.3", "engineio/socket.py"), 40, 57)
    assert permalinks.link(lock, engine) == permalinks.Permalink(
        permalinks.permalink_range(make_pin(), "engineio/socket.py", 40, 57), "commit"
    )
    assert permalinks.link(lock, engine, 44).url.endswith(f"/{COMMIT}/src/engineio/socket.py#L44")
    stdlib = Func("socketserver", "BaseServer.serve_forever", Source("python", "3.11.7", "Lib/socketserver.py"), 1, 2)
    assert permalinks.link(lock, stdlib).pinned == "tag"
    c_send = Func("_socket", "socket.send", Source("builtin", "", ""), 0, 0)
    assert permalinks.link(lock, c_send).pinned == "docs"
    app = Func("dispel.sample_app.app", "on_chat", Source("sample_app", "", "dispel/sample_app/app.py"), 1, 3)
    assert permalinks.link(lock, app) is None
    upgraded = Func("engineio.socket", "Socket.send", Source("python-engineio", "4.14.0", "engineio/socket.py"), 1, 2)
    with pytest.raises(DispelError, match="lock pins 4.13.3"):
        permalinks.link(lock, upgraded)
