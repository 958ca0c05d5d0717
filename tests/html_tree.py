"""Console pages parsed into a tree the tests can ask: elements by tag, attributes or id,
and their text as a reader sees it (the standard library's parser, nothing rendered)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser

__all__ = ["Node", "body_rows", "parse"]

VOID = frozenset({"meta", "link", "input", "br", "img", "hr"})


@dataclass
class Node:
    """An element of a parsed page: its tag, attributes, and its text and elements in order."""

    tag: str
    attrs: dict[str, str]
    content: list[str | Node] = field(default_factory=list)

    @property
    def children(self) -> list[Node]:
        """The elements right inside this one."""
        return [c for c in self.content if isinstance(c, Node)]

    @property
    def text(self) -> str:
        """All the text inside, in order, whitespace collapsed."""
        return " ".join("".join(self._texts()).split())

    def _texts(self) -> Iterator[str]:
        for each in self.content:
            if isinstance(each, Node):
                yield from each._texts()
            else:
                yield each

    def walk(self) -> Iterator[Node]:
        """This element and every element inside it, in document order."""
        yield self
        for child in self.children:
            yield from child.walk()

    def find_all(self, tag: str, **attrs: str) -> list[Node]:
        """Elements inside this one with `tag` whose attributes have these values
        (`class_` for one of the element's classes; `_` stands for `-` in other names)."""
        wanted = {k.rstrip("_").replace("_", "-"): v for k, v in attrs.items()}
        return [
            n
            for n in self.walk()
            if n is not self
            and n.tag == tag
            and all(
                v in n.attrs.get(k, "").split() if k == "class" else n.attrs.get(k) == v
                for k, v in wanted.items()
            )
        ]

    def by_id(self, element_id: str) -> Node:
        """The one element with this id."""
        [found] = [n for n in self.walk() if n.attrs.get("id") == element_id]
        return found

    def has_id(self, element_id: str) -> bool:
        """Whether an element has this id."""
        return any(n.attrs.get("id") == element_id for n in self.walk())


class _TreeBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].content.append(node)
        if tag not in VOID:
            self.stack.append(node)

    def handle_endtag(self, tag: str) -> None:
        for depth in range(len(self.stack) - 1, 0, -1):
            if self.stack[depth].tag == tag:
                del self.stack[depth:]
                return

    def handle_data(self, data: str) -> None:
        self.stack[-1].content.append(data)


def parse(html: str) -> Node:
    """The parsed page."""
    builder = _TreeBuilder()
    builder.feed(html)
    builder.close()
    return builder.root


def body_rows(table: Node) -> list[Node]:
    """The body rows of a table."""
    [body] = table.find_all("tbody")
    return body.find_all("tr")
