"""The hand-in's PDF (pure): Chromium's print normalised (dates, producer, ID), and its links and text read back."""
from __future__ import annotations

import hashlib
import re
import zlib
from collections.abc import Mapping

from .docx_format import recorded_datetime

# --------------------------------------------------------------------------- PDF

_URI = re.compile(rb"/URI\s*(\((?:\\.|[^\\)])*\)|<[0-9A-Fa-f\s]*>)", re.DOTALL)
_ESCAPES = {b"n": b"\n", b"r": b"\r", b"t": b"\t", b"b": b"\b", b"f": b"\f"}


def pdf_string(token: bytes) -> bytes:
    """A PDF literal ``(…)`` or hex ``<…>`` string token -> its bytes."""
    if token.startswith(b"<"):
        digits = re.sub(rb"\s", b"", token[1:-1])
        return bytes.fromhex((digits + b"0" * (len(digits) % 2)).decode())
    body, out, i = token[1:-1], bytearray(), 0
    while i < len(body):
        c = body[i : i + 1]
        if c == b"\\" and i + 1 < len(body):
            n = body[i + 1 : i + 2]
            octal = re.match(rb"[0-7]{1,3}", body[i + 1 : i + 4])
            if octal:
                out.append(int(octal.group(0), 8) & 0xFF)
                i += 1 + len(octal.group(0))
                continue
            out += _ESCAPES.get(n, n if n not in b"\r\n" else b"")
            i += 2
            continue
        out += c
        i += 1
    return bytes(out)


def pdf_links(data: bytes) -> list[str]:
    """The URI link annotations of a PDF (their targets, in the file's order)."""
    return [pdf_string(m.group(1)).decode("utf-8", errors="replace") for m in _URI.finditer(data)]


def pdf_date(iso: str) -> bytes:
    """A PDF date ``D:YYYYMMDDHHmmSS+00'00'`` for an ISO time (UTC); the zip epoch when undated."""
    t = recorded_datetime(iso)
    return f"D:{t:%Y%m%d%H%M%S}+00'00'".encode()


_XREF = re.compile(rb"\nxref\r?\n0 (\d+)\r?\n")
_TRAILER = re.compile(rb"trailer\s*<<(.*?)>>\s*startxref\s*(\d+)\s*%%EOF\s*$", re.DOTALL)


def normalise_pdf(data: bytes, iso: str, producer: str = "Skia/PDF (Chromium), normalised by dispel") -> bytes:
    """Chromium's PDF with the clock and the browser's version taken out: creation and modification
    dates from the recording, a producer without a version, and a fixed ID (a hash of the rest).
    The Info dictionary is rewritten and the cross-reference table recomputed around it.
    Raises ValueError when the file is not laid out as Chromium (Skia) writes PDFs."""
    xref = _XREF.search(data)
    trailer = _TRAILER.search(data)
    if not xref or not trailer:
        raise ValueError("no classic cross-reference table and trailer")
    info_ref = re.search(rb"/Info\s+(\d+)\s+0\s+R", trailer.group(1))
    if not info_ref:
        raise ValueError("the trailer names no Info dictionary")
    count = int(xref.group(1))
    table = data[xref.end() : xref.end() + 20 * count]
    offsets = [int(table[i * 20 : i * 20 + 10]) for i in range(count)]
    num = int(info_ref.group(1))
    start = offsets[num]
    end = data.index(b"endobj", start) + len(b"endobj")
    old = data[start:end]
    date = b"(" + pdf_date(iso) + b")"
    new = re.sub(rb"/(CreationDate|ModDate)\s*\([^)]*\)", lambda m: b"/" + m.group(1) + b" " + date, old)
    new = re.sub(rb"/Producer\s*\((?:\\.|[^\\)])*\)", b"/Producer (" + producer.encode() + b")", new)
    new = re.sub(rb"/Creator\s*\((?:\\.|[^\\)])*\)", b"/Creator (dispel handin)", new)
    delta = len(new) - len(old)
    body = data[:start] + new + data[end : xref.start() + 1]
    shifted = [o + delta if o > start else o for o in offsets]
    lines = [b"0000000000 65535 f \n"] + [b"%010d 00000 n \n" % o for o in shifted[1:]]
    fixed_id = hashlib.md5(body).hexdigest().encode()
    trailer_dict = re.sub(rb"\s*/ID\s*\[[^\]]*\]", b"", trailer.group(1))
    trailer_dict = trailer_dict.rstrip() + b"\n/ID [<" + fixed_id + b"> <" + fixed_id + b">]"
    return (
        body + b"xref\n0 %d\n" % count + b"".join(lines)
        + b"trailer\n<<" + trailer_dict + b">>\nstartxref\n%d\n%%%%EOF\n" % (len(body))
    )


def pdf_objects(data: bytes) -> dict[int, tuple[bytes, bytes | None]]:
    """Object number -> (its dictionary text, its stream's bytes inflated when FlateDecode)."""
    out: dict[int, tuple[bytes, bytes | None]] = {}
    for m in re.finditer(rb"(?m)^(\d+) 0 obj\s*", data):
        start = m.end()
        end = data.find(b"endobj", start)
        head_end = data.find(b"stream", start, end)
        if head_end < 0:
            out[int(m.group(1))] = (data[start:end], None)
            continue
        head = data[start:head_end]
        length = re.search(rb"/Length\s+(\d+)(?!\s+\d+\s+R)", head)
        s = head_end + len(b"stream")
        s += 2 if data[s : s + 2] == b"\r\n" else 1
        raw = data[s : s + int(length.group(1))] if length else data[s : data.find(b"endstream", s)]
        if b"/FlateDecode" in head:
            try:
                raw = zlib.decompress(raw)
            except zlib.error:
                pass
        out[int(m.group(1))] = (head, raw)
    return out


def _cmap(data: bytes) -> dict[bytes, str]:
    """A ToUnicode CMap's bfchar and bfrange entries: glyph code bytes -> text."""
    out: dict[bytes, str] = {}
    for block in re.findall(rb"beginbfchar(.*?)endbfchar", data, re.DOTALL):
        for src, dst in re.findall(rb"<([0-9A-Fa-f]+)>\s*<([0-9A-Fa-f]+)>", block):
            out[bytes.fromhex(src.decode())] = bytes.fromhex(dst.decode()).decode("utf-16-be", errors="replace")
    for block in re.findall(rb"beginbfrange(.*?)endbfrange", data, re.DOTALL):
        for lo, hi, dst in re.findall(rb"<([0-9A-Fa-f]+)>\s*<([0-9A-Fa-f]+)>\s*<([0-9A-Fa-f]+)>", block):
            a, b, width = int(lo, 16), int(hi, 16), len(lo) // 2
            first = int(dst, 16)
            for i in range(b - a + 1):
                out[(a + i).to_bytes(width, "big")] = chr(first + i)
    return out


def _show(stream: bytes, fonts: Mapping[bytes, Mapping[bytes, str]]) -> str:
    """The text a content stream shows: its Tj/TJ strings through the current font's ToUnicode map."""
    out = []
    current: Mapping[bytes, str] = {}
    for m in re.finditer(rb"/(\S+)\s+[\d.]+\s+Tf|\[((?:[^\]\\]|\\.)*)\]\s*TJ|(<[0-9A-Fa-f]*>|\((?:\\.|[^\\)])*\))\s*Tj|(ET)", stream, re.DOTALL):
        if m.group(1):
            current = fonts.get(m.group(1), {})
        elif m.group(4):
            out.append("\n")
        else:
            width = max((len(k) for k in current), default=1)
            for part in re.findall(rb"<[0-9A-Fa-f]*>|\((?:\\.|[^\\)])*\)", m.group(2) or m.group(3)):
                raw = pdf_string(part)
                out.append("".join(current.get(raw[i : i + width], "") for i in range(0, len(raw), width)))
    return "".join(out)


def pdf_page_texts(data: bytes) -> list[str]:
    """The text of each page of a PDF, in page order, decoded through its fonts' ToUnicode maps
    (enough for Chromium's PDFs: classic objects, each page's fonts in its own resources)."""
    objs = pdf_objects(data)

    def ref(head: bytes, name: bytes) -> int | None:
        m = re.search(rb"/" + name + rb"\s+(\d+)\s+0\s+R", head)
        return int(m.group(1)) if m else None

    def unicode_map(font: int) -> dict[bytes, str]:
        tu = ref(objs.get(font, (b"", None))[0], b"ToUnicode")
        stream = objs[tu][1] if tu is not None and tu in objs else None
        return _cmap(stream) if stream is not None else {}

    catalog = next((h for h, _ in objs.values() if re.search(rb"/Type\s*/Catalog\b", h)), b"")
    pages: list[int] = []

    def walk(n: int | None) -> None:
        head = objs.get(n, (b"", None))[0] if n is not None else b""
        if re.search(rb"/Type\s*/Pages\b", head):
            kids = re.search(rb"/Kids\s*\[([^\]]*)\]", head)
            for kid in re.findall(rb"(\d+)\s+0\s+R", kids.group(1) if kids else b""):
                walk(int(kid))
        elif n is not None and re.search(rb"/Type\s*/Page\b", head):  # (head is b"" when n is None)
            pages.append(n)

    walk(ref(catalog, b"Pages"))
    out = []
    for n in pages:
        head = objs[n][0]
        font_dict = re.search(rb"/Font\s*<<(.*?)>>", head, re.DOTALL)
        fonts = {name: unicode_map(int(num)) for name, num in re.findall(rb"/(\S+?)\s+(\d+)\s+0\s+R", font_dict.group(1) if font_dict else b"")}
        contents = re.search(rb"/Contents\s*(\[[^\]]*\]|\d+\s+0\s+R)", head)
        streams = [int(c) for c in re.findall(rb"(\d+)\s+0\s+R", contents.group(1))] if contents else []
        out.append("".join(_show(objs[c][1] or b"", fonts) for c in streams if c in objs))
    return out


def pdf_text(data: bytes) -> str:
    """The text a PDF shows, page after page."""
    return "\n".join(pdf_page_texts(data))
