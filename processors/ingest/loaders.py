"""Turn a document's bytes into plain text plus its heading structure.

Every loader returns a :class:`LoadedDocument`: the text chunks are cut from, and the sections (heading path and
character span) so each chunk can say where in the document it came from. For txt/md/rst the text *is* the source,
so char offsets point into the original file; for HTML they point into the cleaned text, and each section carries
the HTML anchor (``id``) of its heading so a citation can link to ``page.html#anchor``.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import PurePosixPath

CONTENT_TYPES: dict[str, str] = {
    ".txt": "text/plain",
    ".text": "text/plain",
    ".md": "text/markdown",
    ".markdown": "text/markdown",
    ".rst": "text/x-rst",
    ".html": "text/html",
    ".htm": "text/html",
    ".pdf": "application/pdf",
}


class LoadError(ValueError):
    """The document cannot be turned into text (corrupt, wrong encoding, unsupported type): a dead letter."""


@dataclass(frozen=True)
class Section:
    heading_path: tuple[str, ...]
    start: int
    end: int
    anchor: str = ""


@dataclass
class LoadedDocument:
    text: str
    title: str
    sections: list[Section] = field(default_factory=list)


def content_type_for(path: str) -> str | None:
    return CONTENT_TYPES.get(PurePosixPath(path).suffix.lower())


def load(content: str, content_type: str, *, raw: bytes = b"", title: str = "", source_uri: str = "") -> LoadedDocument:
    """Dispatch on the media type (parameters such as ``; charset=`` are ignored)."""
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind == "application/pdf":
        return load_pdf(raw or content.encode("latin-1"), title=title)
    loader = _TEXT_LOADERS.get(kind)
    if loader is None:
        raise LoadError(f"unsupported content type {content_type!r}")
    if raw and not content:
        try:
            content = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise LoadError(f"{source_uri or 'document'} is not valid UTF-8 text: {exc}") from None
    if "\x00" in content:
        raise LoadError(f"{source_uri or 'document'} contains NUL bytes: binary data sent as {kind}")
    doc = loader(content, title)
    if not doc.title:
        doc.title = PurePosixPath(source_uri).stem if source_uri else ""
    return doc


# --- plain text ------------------------------------------------------------------------------------------------


def load_text(content: str, title: str = "") -> LoadedDocument:
    if not title:
        first = next((line.strip() for line in content.splitlines() if line.strip()), "")
        title = first[:120]
    return LoadedDocument(content, title, [Section((), 0, len(content))])


def _sections_from_headings(content: str, headings: list[tuple[int, int, str]], title: str) -> LoadedDocument:
    """Sections from ``(offset, level, heading)``: each runs from its heading to the next one."""
    sections: list[Section] = []
    stack: list[tuple[int, str]] = []
    if not headings or headings[0][0] > 0:
        sections.append(Section((), 0, headings[0][0] if headings else len(content)))
    for i, (offset, level, text) in enumerate(headings):
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, text))
        end = headings[i + 1][0] if i + 1 < len(headings) else len(content)
        sections.append(Section(tuple(h for _, h in stack), offset, end, _slug(text)))
    if not title and headings:
        title = min(headings, key=lambda h: (h[1], h[0]))[2]
    return LoadedDocument(content, title, [s for s in sections if s.end > s.start])


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


# --- markdown --------------------------------------------------------------------------------------------------

_MD_ATX = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")
_MD_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_MD_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")


def load_markdown(content: str, title: str = "") -> LoadedDocument:
    headings: list[tuple[int, int, str]] = []
    offset = 0
    fence = ""
    previous: tuple[int, str] | None = None  # (offset, text) of the last plain line, for setext headings
    for line in content.splitlines(keepends=True):
        stripped = line.rstrip("\r\n")
        fence_match = _MD_FENCE.match(stripped)
        if fence_match:
            marker = fence_match.group(1)
            if not fence:
                fence = marker[0] * 3
            elif marker.startswith(fence):
                fence = ""
            previous = None
        elif not fence:
            atx = _MD_ATX.match(stripped)
            setext = _MD_SETEXT.match(stripped)
            if atx:
                headings.append((offset, len(atx.group(1)), atx.group(2).strip()))
                previous = None
            elif setext and previous is not None:
                headings.append((previous[0], 1 if setext.group(1)[0] == "=" else 2, previous[1]))
                previous = None
            else:
                previous = (offset, stripped.strip()) if stripped.strip() else None
        offset += len(line)
    return _sections_from_headings(content, headings, title)


# --- reStructuredText ------------------------------------------------------------------------------------------

_RST_ADORNMENT = re.compile(r"^([!-/:-@\[-`{-~])\1{2,}\s*$")


def load_rst(content: str, title: str = "") -> LoadedDocument:
    """Headings are a text line underlined (optionally overlined) with punctuation; levels in order of first use."""
    lines = content.splitlines(keepends=True)
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line))
    styles: list[tuple[str, bool]] = []
    headings: list[tuple[int, int, str]] = []
    i = 0
    while i < len(lines) - 1:
        text = lines[i].strip()
        under = lines[i + 1].rstrip("\r\n")
        match = _RST_ADORNMENT.match(under)
        if text and match and not _RST_ADORNMENT.match(lines[i].rstrip("\r\n")) and len(under.strip()) >= len(text):
            overlined = i > 0 and bool(_RST_ADORNMENT.match(lines[i - 1].rstrip("\r\n")))
            style = (match.group(1), overlined)
            if style not in styles:
                styles.append(style)
            start = offsets[i - 1] if overlined else offsets[i]
            headings.append((start, styles.index(style) + 1, text))
            i += 2
            continue
        i += 1
    return _sections_from_headings(content, headings, title)


# --- HTML ------------------------------------------------------------------------------------------------------

_DROP_TAGS = {"script", "style", "noscript", "nav", "header", "footer", "aside", "form", "template", "svg", "button"}
_DROP_CLASSES = {"headerlink", "sphinxsidebar", "related", "footer", "clearer"}
_BLOCK_TAGS = {
    "p", "div", "section", "article", "main", "li", "ul", "ol", "dl", "dt", "dd", "pre", "blockquote", "figure",
    "figcaption", "table", "thead", "tbody", "tr", "caption", "hr", "br", "address", "details", "summary",
}  # fmt: skip
_HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
_WS = re.compile(r"\s+")


class _HtmlText:
    """Walks the element tree once, writing paragraphs separated by blank lines and recording heading sections."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.length = 0
        self.line: list[str] = []
        self.prefix = ""  # a list marker waiting for the item's first text
        self.headings: list[tuple[int, int, str, str]] = []  # offset, level, text, anchor

    def flush(self, separator: str = "\n\n") -> None:
        text = _WS.sub(" ", "".join(self.line)).strip()
        self.line = []
        if text:
            self.write(self.prefix + text, separator)
            self.prefix = ""

    def write(self, text: str, separator: str = "\n\n") -> None:
        if self.length:
            self.parts.append(separator)
            self.length += len(separator)
        self.parts.append(text)
        self.length += len(text)

    def walk(self, element: object) -> None:
        from lxml import html as lxml_html

        assert isinstance(element, lxml_html.HtmlElement)
        tag = element.tag if isinstance(element.tag, str) else ""
        classes = set((element.get("class") or "").split())
        if tag in _DROP_TAGS or classes & _DROP_CLASSES:
            self._tail(element)
            return
        level = _HEADINGS.get(tag)
        if level is not None:
            self.flush()
            text = _WS.sub(" ", element.text_content()).replace("¶", "").strip()
            if text:
                anchor = element.get("id") or ""
                parent = element.getparent()
                if not anchor and parent is not None and parent.tag == "section":
                    anchor = parent.get("id") or ""
                self.headings.append((self.length + (2 if self.length else 0), level, text, anchor))
                self.write(text)
            self._tail(element)
            return
        if tag == "pre":
            self.flush()
            code = element.text_content().strip("\n")
            if code.strip():
                self.write(code)
            self._tail(element)
            return
        block = tag in _BLOCK_TAGS
        if block:
            self.flush()
            if tag == "li":
                self.prefix = "- "
        elif tag in ("td", "th"):
            self.line.append(" | " if self.line else "")
        if element.text:
            self.line.append(element.text)
        for child in element:
            self.walk(child)
        if block:
            self.flush()
        self._tail(element)

    def _tail(self, element: object) -> None:
        tail = getattr(element, "tail", None)
        if tail:
            self.line.append(tail)


def load_html(content: str, title: str = "") -> LoadedDocument:
    from lxml import etree
    from lxml import html as lxml_html

    try:
        tree = lxml_html.document_fromstring(content)
    except (etree.ParserError, ValueError) as exc:
        raise LoadError(f"unparseable HTML: {exc}") from None
    if not title:
        titles = tree.xpath("//title")
        first = titles[0] if isinstance(titles, list) and titles else None
        if isinstance(first, lxml_html.HtmlElement):
            title = _WS.sub(" ", first.text_content()).strip()
    found = tree.xpath('//*[@role="main"] | //main | //article')
    if not found:
        found = tree.xpath('//div[contains(concat(" ", normalize-space(@class), " "), " body ")]')
    if not found:
        found = tree.xpath("//body")
    elements = [e for e in (found if isinstance(found, list) else []) if isinstance(e, lxml_html.HtmlElement)]
    root = elements[0] if elements else tree
    builder = _HtmlText()
    builder.walk(root)
    builder.flush()
    text = "".join(builder.parts)
    sections: list[Section] = []
    stack: list[tuple[int, str]] = []
    heads = builder.headings
    if not heads or heads[0][0] > 0:
        sections.append(Section((), 0, heads[0][0] if heads else len(text)))
    for i, (offset, level, heading, anchor) in enumerate(heads):
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, heading))
        end = heads[i + 1][0] if i + 1 < len(heads) else len(text)
        sections.append(Section(tuple(h for _, h in stack), offset, end, anchor))
    if not title and heads:
        title = heads[0][2]
    return LoadedDocument(text, title, [s for s in sections if s.end > s.start])


# --- PDF -------------------------------------------------------------------------------------------------------


def load_pdf(raw: bytes, title: str = "") -> LoadedDocument:
    """One section per page (``Page N``), via pypdf (pure Python, maintained, offline)."""
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(io.BytesIO(raw), strict=False)
        pages = [page.extract_text() or "" for page in reader.pages]
        meta_title = (reader.metadata.title if reader.metadata else None) or ""
    except (PyPdfError, ValueError, KeyError, TypeError, OSError) as exc:
        raise LoadError(f"unreadable PDF: {type(exc).__name__}: {exc}") from None
    parts: list[str] = []
    sections: list[Section] = []
    length = 0
    for number, page in enumerate(pages, start=1):
        if length:
            parts.append("\n\n")
            length += 2
        sections.append(Section((f"Page {number}",), length, length + len(page)))
        parts.append(page)
        length += len(page)
    return LoadedDocument("".join(parts), title or str(meta_title), [s for s in sections if s.end > s.start])


_TEXT_LOADERS: dict[str, Callable[[str, str], LoadedDocument]] = {
    "text/plain": load_text,
    "text/markdown": load_markdown,
    "text/x-markdown": load_markdown,
    "text/x-rst": load_rst,
    "text/prs.fallenstein.rst": load_rst,
    "text/html": load_html,
    "application/xhtml+xml": load_html,
}
