"""The hand-in as a Word document (pure): report.md's HTML written with python-docx, with fixed zip
times and properties, and its links and text read back."""
from __future__ import annotations

import hashlib
import io
import re
import zipfile
from datetime import UTC, datetime
from typing import ClassVar

# --------------------------------------------------------------------------- DOCX

DOCX_EPOCH = (1980, 1, 1, 0, 0, 0)  # every zip entry's time: the bytes do not depend on the clock


def recorded_datetime(iso: str) -> datetime:
    """The recording's time (UTC) for document properties; the zip epoch when it is not dated."""
    if iso:
        return datetime.fromisoformat(iso).astimezone(UTC).replace(tzinfo=None)
    return datetime(*DOCX_EPOCH)


def to_docx(html_body: str, title: str, when: datetime) -> bytes:
    """The HTML of report.md as a Word document with real headings, lists, tables and hyperlinks;
    the same bytes for the same input (fixed zip times and core properties)."""
    import docx  # python-docx, only where a DOCX is written
    import lxml.html

    doc = docx.Document()
    props = doc.core_properties
    props.title, props.author, props.last_modified_by = title, "dispel", "dispel"
    props.created = props.modified = props.last_printed = when
    props.revision, props.comments, props.subject, props.keywords, props.category = 1, "", "", "", ""
    root = lxml.html.fragment_fromstring(html_body, create_parent="div")
    _DocxWriter(doc).blocks(root)
    buf = io.BytesIO()
    doc.save(buf)
    return _fixed_zip(buf.getvalue())


def _fixed_zip(data: bytes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as zin, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            fixed = zipfile.ZipInfo(info.filename, DOCX_EPOCH)
            fixed.compress_type = zipfile.ZIP_DEFLATED
            fixed.external_attr = 0o644 << 16
            zout.writestr(fixed, zin.read(info.filename))
    return out.getvalue()


class _DocxWriter:
    """Walks the HTML Python-Markdown made and writes python-docx paragraphs, runs, tables and hyperlinks."""

    HEADINGS: ClassVar[dict[str, int]] = {"h1": 0, "h2": 1, "h3": 2, "h4": 3, "h5": 4, "h6": 5}

    def __init__(self, doc) -> None:
        from docx.opc.constants import RELATIONSHIP_TYPE
        from docx.oxml import OxmlElement
        from docx.oxml.ns import qn

        self.doc, self.el, self.qn, self.rt = doc, OxmlElement, qn, RELATIONSHIP_TYPE

    def blocks(self, parent, list_level: int = 0, ordered: bool = False) -> None:
        for node in parent:
            tag = node.tag if isinstance(node.tag, str) else ""
            if tag in self.HEADINGS:
                heading = self.doc.add_heading("", self.HEADINGS[tag])
                if node.get("id"):
                    self._bookmark(heading._p, node.get("id"))
                self.inline(heading, node)
            elif tag == "p":
                self.inline(self.doc.add_paragraph(), node)
            elif tag in ("ul", "ol"):
                self.list(node, list_level + 1, tag == "ol")
            elif tag == "table":
                self.table(node)
            elif tag == "pre":
                p = self.doc.add_paragraph()
                self._run(p._p, node.text_content(), code=True)
            elif tag in ("div", "blockquote"):
                self.blocks(node, list_level, ordered)

    def list(self, node, level: int, ordered: bool) -> None:
        style = ("List Number" if ordered else "List Bullet") + (f" {min(level, 3)}" if level > 1 else "")
        for li in node:
            if not isinstance(li.tag, str) or li.tag != "li":
                continue
            p = self.doc.add_paragraph(style=style)
            inline_done = False
            if li.text and li.text.strip():
                self._text(p._p, li.text, {})
                inline_done = True
            for child in li:
                if child.tag in ("ul", "ol"):
                    self.list(child, level + 1, child.tag == "ol")
                elif child.tag == "p":
                    target = p if not inline_done else self.doc.add_paragraph(style=style)
                    self.inline(target, child)
                    inline_done = True
                else:
                    self._node(p._p, child, {})
                    inline_done = True
                if child.tail and child.tail.strip():
                    self._text(p._p, child.tail, {})

    def table(self, node) -> None:
        rows = [tr for tr in node.iter("tr")]
        cols = max(len([c for c in tr if c.tag in ("td", "th")]) for tr in rows)
        table = self.doc.add_table(rows=len(rows), cols=cols)
        table.style = "Table Grid"
        for r, tr in enumerate(rows):
            for c, cell in enumerate([c for c in tr if c.tag in ("td", "th")]):
                para = table.cell(r, c).paragraphs[0]
                self.inline(para, cell, {"bold": True} if cell.tag == "th" else {})

    def inline(self, para, node, fmt: dict | None = None) -> None:
        fmt = fmt or {}
        if node.text:
            self._text(para._p, node.text, fmt)
        for child in node:
            self._node(para._p, child, fmt)
            if child.tail:
                self._text(para._p, child.tail, fmt)

    def _node(self, parent, node, fmt: dict) -> None:
        tag = node.tag if isinstance(node.tag, str) else ""
        if tag == "br":
            r = self.el("w:r")
            r.append(self.el("w:br"))
            parent.append(r)
            return
        inner = dict(fmt)
        if tag in ("strong", "b"):
            inner["bold"] = True
        elif tag in ("em", "i"):
            inner["italic"] = True
        elif tag == "code":
            inner["code"] = True
        href = node.get("href", "") if tag == "a" else ""
        if tag == "a" and node.get("id"):
            self._bookmark(parent, node.get("id"))
        if href.startswith(("http://", "https://")):
            link = self.el("w:hyperlink")
            link.set(self.qn("r:id"), self.doc.part.relate_to(href, self.rt.HYPERLINK, is_external=True))
            parent.append(link)
            parent, inner = link, {**inner, "link": True}
        elif href.startswith("#") and len(href) > 1:  # a place in the document: a bookmark
            link = self.el("w:hyperlink")
            link.set(self.qn("w:anchor"), bookmark_name(href[1:]))
            parent.append(link)
            parent, inner = link, {**inner, "link": True}
        if not tag:  # a comment
            return
        if node.text:
            self._text(parent, node.text, inner)
        for child in node:
            self._node(parent, child, inner)
            if child.tail:
                self._text(parent, child.tail, inner)

    def _bookmark(self, parent, name: str) -> None:
        """A bookmark (an empty one, where the id stands) that internal links lead to."""
        self.bookmarks = getattr(self, "bookmarks", 0) + 1
        for what in ("w:bookmarkStart", "w:bookmarkEnd"):
            mark = self.el(what)
            mark.set(self.qn("w:id"), str(self.bookmarks))
            if what == "w:bookmarkStart":
                mark.set(self.qn("w:name"), bookmark_name(name))
            parent.append(mark)

    def _text(self, parent, text: str, fmt: dict) -> None:
        text = re.sub(r"\s*\n\s*", " ", text)
        if text:
            self._run(parent, text, **fmt)

    def _run(self, parent, text: str, bold: bool = False, italic: bool = False, code: bool = False, link: bool = False) -> None:
        r = self.el("w:r")
        props = self.el("w:rPr")
        if code:
            fonts = self.el("w:rFonts")
            for attr in ("w:ascii", "w:hAnsi", "w:cs"):
                fonts.set(self.qn(attr), "Courier New")
            props.append(fonts)
        for flag, name in ((bold, "w:b"), (italic, "w:i")):
            if flag:
                props.append(self.el(name))
        if link:
            color = self.el("w:color")
            color.set(self.qn("w:val"), "0B57D0")
            props.append(color)
            underline = self.el("w:u")
            underline.set(self.qn("w:val"), "single")
            props.append(underline)
        if len(props):
            r.append(props)
        t = self.el("w:t")
        t.set(self.qn("xml:space"), "preserve")
        t.text = text
        r.append(t)
        parent.append(r)


def bookmark_name(anchor: str) -> str:
    """A Word bookmark name for an HTML id: letters, digits and underscores, at most 40 characters."""
    name = "h_" + re.sub(r"[^A-Za-z0-9]", "_", anchor)
    return name if len(name) <= 40 else name[:31] + "_" + hashlib.sha1(anchor.encode()).hexdigest()[:8]


def docx_links(data: bytes) -> list[str]:
    """The external hyperlinks of a DOCX, in document order, read from its relationships."""
    import docx
    from docx.oxml.ns import qn

    doc = docx.Document(io.BytesIO(data))
    rels = {rid: rel.target_ref for rid, rel in doc.part.rels.items() if rel.is_external}
    return [rels[h.get(qn("r:id"))] for h in doc.element.body.iter(qn("w:hyperlink")) if h.get(qn("r:id")) in rels]


def docx_text(data: bytes) -> str:
    """Every paragraph's and table cell's text of a DOCX (hyperlinks' text included)."""
    import docx
    from docx.oxml.ns import qn

    doc = docx.Document(io.BytesIO(data))
    return "\n".join("".join(t.text or "" for t in p.iter(qn("w:t"))) for p in doc.element.body.iter(qn("w:p")))
