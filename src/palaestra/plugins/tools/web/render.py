"""HTML to readable text: headings, paragraphs and list items on their own lines, links numbered [n]."""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser
from urllib.parse import urljoin

BLOCK_TAGS = {"p", "div", "li", "tr", "br", "h1", "h2", "h3", "h4", "ul", "ol", "table", "section", "form"}
SKIPPED_TAGS = {"script", "style", "head"}


@dataclass
class Link:
    number: int
    text: str
    url: str


@dataclass
class RenderedPage:
    url: str
    title: str
    text: str
    links: list[Link] = field(default_factory=list)

    def link(self, ref: int | str) -> Link | None:
        """A link by its number or its text (case-insensitive, exact first, then unique prefix)."""
        if isinstance(ref, int) or (isinstance(ref, str) and ref.strip().lstrip("[").rstrip("]").isdigit()):
            number = int(str(ref).strip().lstrip("[").rstrip("]"))
            return next((link for link in self.links if link.number == number), None)
        wanted = str(ref).strip().lower()
        exact = [link for link in self.links if link.text.lower() == wanted]
        if exact:
            return exact[0]
        prefixed = [link for link in self.links if link.text.lower().startswith(wanted)]
        return prefixed[0] if len(prefixed) == 1 else None


class _TextRenderer(HTMLParser):
    def __init__(self, base_url: str) -> None:
        super().__init__(convert_charrefs=True)
        self.base_url = base_url
        self.lines: list[str] = []
        self.current: list[str] = []
        self.links: list[Link] = []
        self.title = ""
        self._skip = 0
        self._in_title = False
        self._href: str | None = None
        self._anchor: list[str] = []
        self._heading = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in SKIPPED_TAGS:
            self._skip += 1
        if tag == "title":
            self._in_title = True
        if tag in BLOCK_TAGS:
            self._break()
        if tag in ("h1", "h2", "h3", "h4"):
            self._heading = "#" * int(tag[1]) + " "
        if tag == "li":
            self.current.append("- ")
        if tag in ("td", "th"):
            self.current.append(" ")  # cells of a row stay on one line, apart
        if tag == "a":
            self._href = dict(attrs).get("href") or ""
            self._anchor = []

    def handle_endtag(self, tag: str) -> None:
        if tag in SKIPPED_TAGS:
            self._skip = max(0, self._skip - 1)
        if tag == "title":
            self._in_title = False
        if tag == "a" and self._href is not None:
            text = " ".join("".join(self._anchor).split())
            number = len(self.links) + 1
            self.links.append(Link(number, text, urljoin(self.base_url, self._href)))
            self.current.append(f"[{number}] {text}")
            self._href = None
        if tag in BLOCK_TAGS:
            self._break()

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
            return
        if self._skip:
            return
        if self._href is not None:
            self._anchor.append(data)
        else:
            self.current.append(data)

    def _break(self) -> None:
        line = " ".join("".join(self.current).split())
        if line:
            self.lines.append(self._heading + line)
        self.current = []
        self._heading = ""


def render(html: str, url: str) -> RenderedPage:
    renderer = _TextRenderer(url)
    renderer.feed(html)
    renderer.close()
    renderer._break()
    title = " ".join(renderer.title.split())
    return RenderedPage(url=url, title=title, text="\n".join(renderer.lines), links=renderer.links)
