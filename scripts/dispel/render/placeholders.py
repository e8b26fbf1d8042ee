"""Facts the trace knows, put into hand-written prose by ``dispel render`` (pure).

An annotation never types a fact the generator knows; it writes a placeholder, and the
page shows the recorded fact. The placeholders (documented in docs/annotations/README.md):

``{{thread}}``            the hop's thread, as code: `request-5`
``{{thread:KEY}}``        the thread of the first hop of function KEY on the page (``KEY#N``: its N-th hop);
                          also in a journey summary
``{{line}}``              the executed (highlighted) line's source text, as code
``{{lineno}}``            the executed line's number
``{{nextthread}}``        the next hop's thread, as code (the thread a wake-up or a thread start leads to)
``{{hop:KEY}}``           a link to the first hop of function KEY (module:qualname) on the page: [hop 18](#hop-18)
``{{next:KEY}}``          a link to the first hop of KEY after this hop
``{{frame:FIELD}}``       the WebSocket frame this hop's stretch of its thread received or sent (the bytes
                          of the socket call among the consecutive hops on the hop's thread): FIELD is
                          byte0, byte1 (as 0xNN), fin, rsv1, mask (0 or 1), opcode (0xN), length
                          (the payload's), size (the socket call's bytes)
``{{frame:FIELD@KEY}}``   the same for the frame of the first hop of function KEY on the page (``@KEY#N``:
                          its N-th hop); also in a journey summary
``{{deflate?YES|NO}}``    YES when permessage-deflate was negotiated on the page's connection (wsproto's
                          PerMessageDeflate is a hop, the page's 101 response accepts it, or a frame on
                          the page has RSV1 set), NO when the page's 101 response or frames tell otherwise

A placeholder that is unknown, or that cannot be filled where it stands (no such hop, no frame,
a hop fact in a journey summary), is a DispelError naming the annotation, the journey and the hop.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import TypeGuard

from ..model import Chain, DispelError, Hop
from ..tracefiles.values import bytes_of
from ..wire import OPCODES, frame_layout

PLACEHOLDER_RE = re.compile(r"\{\{\s*(?P<name>[a-z]+)(?::(?P<arg>[^{}|?]+?)|\?(?P<yes>[^{}|]*)\|(?P<no>[^{}|]*))?\s*\}\}")
ANY_BRACES_RE = re.compile(r"\{\{.*?\}\}", re.DOTALL)
FRAME_FIELDS = ("byte0", "byte1", "fin", "rsv1", "mask", "opcode", "length", "size")
SOCKET_MODULE = "_socket"
DEFLATE_HOP = ("wsproto.extensions", "PerMessageDeflate.")
SWITCHING = b"HTTP/1.1 101 "
DEFLATE_HEADER = b"sec-websocket-extensions: permessage-deflate"
NAMES = ("thread", "nextthread", "line", "lineno", "hop", "next", "frame", "deflate")


def value_bytes(value: str | None) -> bytes | None:
    """The bytes of an observed value ``name = b'...'``, None when it holds no bytes."""
    return bytes_of(value.partition(" = ")[2]) if value else None


def printable_bytes(raw: str) -> bytes:
    """Undo wire.printable: ``\\xNN`` back to its byte, other characters as themselves."""
    out = bytearray()
    for m in re.finditer(r"\\x([0-9a-f]{2})|(.)", raw, re.DOTALL):
        out += bytes([int(m.group(1), 16)]) if m.group(1) else m.group(2).encode("latin-1", "replace")
    return bytes(out)


def is_frame(data: bytes | None) -> TypeGuard[bytes]:
    """Bytes that start a WebSocket frame (a known opcode, a complete header)."""
    if not data:
        return False
    return frame_layout(data) is not None and (data[0] & 0x0F) in OPCODES


def thread_stretch(chain: Chain, index: int) -> range:
    """The consecutive hops around ``index`` that run on its thread."""
    thread = chain.hops[index].thread
    start = index
    while start > 0 and chain.hops[start - 1].thread == thread:
        start -= 1
    end = index + 1
    while end < len(chain.hops) and chain.hops[end].thread == thread:
        end += 1
    return range(start, end)


def hop_frame(chain: Chain, index: int) -> bytes | None:
    """The frame a hop's stretch of its thread received or sent: the bytes of its socket call."""
    for i in thread_stretch(chain, index):
        hop = chain.hops[i]
        data = value_bytes(hop.value) if hop.func.module == SOCKET_MODULE else None
        if is_frame(data):
            return data
    return None


def page_frames(chain: Chain) -> list[bytes]:
    """Every WebSocket frame the page shows: the socket calls' bytes and the captured wire."""
    frames = [data for hop in chain.hops if hop.func.module == SOCKET_MODULE and is_frame(data := value_bytes(hop.value))]
    frames += [printable_bytes(layer.raw) for layer in chain.wire if layer.layer.startswith("WebSocket frame")]
    return frames


def handshake_responses(chain: Chain) -> list[bytes]:
    """The ``101 Switching Protocols`` responses the page's socket calls sent."""
    sent = [value_bytes(h.value) for h in chain.hops if h.func.module == SOCKET_MODULE]
    return [data for data in sent if data and data.startswith(SWITCHING)]


def deflate_negotiated(chain: Chain) -> bool | None:
    """Whether permessage-deflate was negotiated on the page's connection; None when the page cannot tell."""
    if any(h.func.module == DEFLATE_HOP[0] and h.func.qualname.startswith(DEFLATE_HOP[1]) for h in chain.hops):
        return True
    accepted = handshake_responses(chain)
    if accepted:  # the server's 101 names the extensions it accepted
        return any(DEFLATE_HEADER in r.lower() for r in accepted)
    frames = page_frames(chain)
    if not frames:
        return None
    return any(f[0] & 0x40 for f in frames)


def frame_field(data: bytes, field: str) -> str:
    b0, b1 = data[0], data[1]
    layout = frame_layout(data)
    return {
        "byte0": f"0x{b0:02x}",
        "byte1": f"0x{b1:02x}",
        "fin": str(b0 >> 7),
        "rsv1": str((b0 >> 6) & 1),
        "mask": str(b1 >> 7),
        "opcode": f"0x{b0 & 0x0F:x}",
        "length": str(layout[1]) if layout else "",
        "size": str(len(data)),
    }[field]


def hop_link(n: int) -> str:
    return f"[hop {n}](#hop-{n})"


def _first_hop(hops: Sequence[Hop], key: str, start: int = 0) -> int | None:
    for i in range(start, len(hops)):
        if hops[i].func.key == key:
            return i
    return None


def fill(
    text: str, chain: Chain, index: int | None, key: str, code: Callable[[str], str] = lambda s: f"`{s}`",
    numbers: Mapping[int, int] | None = None,
) -> str:
    """``text`` with its placeholders filled for hop ``index`` of ``chain`` (None: the journey summary).

    ``key`` names the annotation in errors; ``code`` renders inline code (render.inline_code);
    ``numbers`` maps a chain position (1-based) to the number the page shows it under (dispel.chains.fold.page_numbers).
    """
    filler = _Filler(chain, index, key, code, numbers or {})
    filled = PLACEHOLDER_RE.sub(filler.fill, text)
    leftover = ANY_BRACES_RE.search(filled)
    if leftover:
        raise filler.fail(leftover.group(0), "is not a placeholder")
    return filled


class _Filler:
    """The placeholders of one text, filled for one hop (or the summary) of one chain."""

    def __init__(self, chain: Chain, index: int | None, key: str, code: Callable[[str], str], numbers: Mapping[int, int]) -> None:
        self.chain, self.index, self.code, self.numbers = chain, index, code, numbers
        self.where = f"annotation {key} on {chain.journey}" + (f" hop {index + 1}" if index is not None else " (summary)")
        self.hop = chain.hops[index] if index is not None else None

    def fail(self, placeholder: str, why: str) -> DispelError:
        return DispelError(f"{self.where}: {placeholder} {why}; see docs/annotations/README.md")

    def shown(self, n: int) -> int:
        return self.numbers.get(n, n)

    def fill(self, m: re.Match) -> str:
        if m.group("name") == "frame" and m.group("arg") and "@" in m.group("arg"):
            field, _, where = m.group("arg").partition("@")
            return self.frame_of(m, field.strip(), where)
        return self.one(m)

    def one(self, m: re.Match) -> str:
        name, arg, whole = m.group("name"), m.group("arg"), m.group(0)
        if name not in NAMES:
            raise self.fail(whole, f"is not a placeholder (known: {', '.join(NAMES)})")
        takes_arg = name in ("hop", "next", "frame")
        if name == "thread" and arg is not None:  # {{thread:KEY}}: the thread of a function's hop
            return self.code(self.chain.hops[self.nth_hop(m, arg)].thread)
        if takes_arg != (arg is not None) or (name == "deflate") != (m.group("yes") is not None):
            raise self.fail(whole, "is malformed")
        if name == "deflate":
            return self.deflate(m)
        if name == "hop":
            found = _first_hop(self.chain.hops, arg.strip())
            if found is None:
                raise self.fail(whole, f"cannot be filled: {arg.strip()} is not a hop on this page")
            return hop_link(self.shown(found + 1))
        if self.hop is None:
            raise self.fail(whole, "cannot be filled in a journey summary (it needs a hop)")
        return self.of_hop(name, arg, whole)

    def deflate(self, m: re.Match) -> str:
        told = deflate_negotiated(self.chain)
        if told is None:
            raise self.fail(m.group(0), "cannot be filled: the page has no WebSocket frame to tell")
        return m.group("yes") if told else m.group("no")

    def of_hop(self, name: str, arg: str | None, whole: str) -> str:
        """The placeholders that need a hop: thread, nextthread, lineno, line, next, frame."""
        hop, index, chain = self.hop, self.index, self.chain
        assert hop is not None and index is not None
        if name == "thread":
            return self.code(hop.thread)
        if name == "nextthread":
            if index + 1 >= len(chain.hops):
                raise self.fail(whole, "cannot be filled: this is the last hop")
            return self.code(chain.hops[index + 1].thread)
        if name == "lineno":
            if hop.func.is_c:
                raise self.fail(whole, "cannot be filled: a C function has no source line")
            return str(hop.line)
        if name == "line":
            if not hop.line_text:
                raise self.fail(whole, "cannot be filled: the hop has no executed line text")
            return self.code(hop.line_text)
        assert arg is not None
        if name == "next":
            found = _first_hop(chain.hops, arg.strip(), index + 1)
            if found is None:
                raise self.fail(whole, f"cannot be filled: no hop of {arg.strip()} follows")
            return hop_link(self.shown(found + 1))
        field = arg.strip()
        if field not in FRAME_FIELDS:
            raise self.fail(whole, f"names no frame field (known: {', '.join(FRAME_FIELDS)})")
        data = hop_frame(chain, index)
        if data is None:
            raise self.fail(whole, "cannot be filled: no socket call on this stretch of the thread carries a WebSocket frame")
        return frame_field(data, field)

    def nth_hop(self, m: re.Match, where: str) -> int:
        """``KEY`` or ``KEY#N``: the index of the first (N-th) hop of function KEY on the page."""
        key, _, nth = where.partition("#")
        found = [i for i, h in enumerate(self.chain.hops) if h.func.key == key.strip()]
        n = int(nth) if nth.isdigit() else 1
        if not nth.isdigit() and nth or not 1 <= n <= len(found):
            raise self.fail(m.group(0), f"cannot be filled: the page has {len(found)} hop(s) of {key.strip()}")
        return found[n - 1]

    def frame_of(self, m: re.Match, field: str, where: str) -> str:
        """``{{frame:FIELD@KEY}}`` / ``{{frame:FIELD@KEY#N}}``: the frame of the first (N-th) hop of KEY."""
        if field not in FRAME_FIELDS:
            raise self.fail(m.group(0), f"names no frame field (known: {', '.join(FRAME_FIELDS)})")
        at = self.nth_hop(m, where)
        hop = self.chain.hops[at]
        own = value_bytes(hop.value) if hop.func.module == SOCKET_MODULE else None
        data = own if is_frame(own) else hop_frame(self.chain, at)
        if data is None:
            raise self.fail(m.group(0), f"cannot be filled: hop {at + 1} carries no WebSocket frame")
        return frame_field(data, field)
