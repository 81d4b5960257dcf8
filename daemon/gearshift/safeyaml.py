"""YAML from users, read with bounds: a size limit and a cap on what aliases may expand to.

PyYAML composes an alias as a second reference to the anchored node, so a 390-byte
"billion laughs" file composes in microseconds; it is whoever walks the result (our
position-keeping converter, or ``construct_document``) that expands it into 10^9 values
and gigabytes. Anchors and aliases are legitimate YAML (a shared placement block), so
they are not refused outright: every alias is charged the number of nodes it expands to,
and once one file's aliases together would add more than ``MAX_ALIAS_NODES`` nodes the
file is refused at that alias, with its line and column. A recursive alias (``&a [*a]``)
is refused too. Files larger than ``MAX_YAML_BYTES`` are refused before they are parsed,
and so is a file of more than ``MAX_NODES`` nodes (aliases expanded) once it gets there:
no policy, providers or config file comes anywhere near either, and the pure-Python
parser needs about 70 microseconds per node (a mebibyte of ``- 1`` lines: 30 s, 260 MB).

Every YAML file gearshift reads from an operator goes through here: policy and providers
files (policy/loader.py), the daemon's config file (settings.py) and the agent's config.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

MAX_YAML_BYTES = 1024 * 1024
"""Largest YAML file read (bytes)."""

MAX_ALIAS_NODES = 10_000
"""Most nodes the aliases of one file may add by expansion (a real file's aliases add tens)."""

MAX_NODES = 50_000
"""Most nodes (values, lists, mappings) one file may hold, aliases expanded: a providers
file listing 1 000 machines holds about 5 000; parsing 50 000 takes the pure-Python parser
about 3 s."""


class YamlLimitError(yaml.MarkedYAMLError):
    """The document is refused for its shape (alias expansion), not for its syntax."""


class FileTooLarge(ValueError):
    """The file is larger than the limit; nothing of it was parsed."""

    def __init__(self, path: Path, limit: int) -> None:
        super().__init__(f"file is larger than {limit} bytes: refused unread")
        self.path = path
        self.limit = limit


def read_text(path: Path, *, max_bytes: int = MAX_YAML_BYTES) -> str:
    """The file's text, or FileTooLarge without reading more than ``max_bytes + 1`` bytes.

    OSError and UnicodeDecodeError pass through for the caller to word.
    """
    with path.open("rb") as handle:
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise FileTooLarge(path, max_bytes)
    return data.decode("utf-8")


class BoundedSafeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` whose aliases may add at most ``max_alias_nodes`` nodes in all,
    and whose stream may hold at most ``max_nodes`` nodes, aliases expanded."""

    def __init__(self, stream: str, *, max_alias_nodes: int = MAX_ALIAS_NODES,
                 max_nodes: int = MAX_NODES) -> None:
        super().__init__(stream)
        self.max_alias_nodes = max_alias_nodes
        self.max_nodes = max_nodes
        self.alias_nodes = 0  # nodes added by alias expansion so far (whole stream)
        self.nodes = 0  # nodes composed so far (whole stream)
        # id(node) -> (node, its size once expanded); holding the node keeps its id unique
        self._sizes: dict[int, tuple[yaml.Node, int]] = {}
        self._open: set[str] = set()  # anchors whose node is still being composed

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        event: Any = self.peek_event()  # type: ignore[no-untyped-call]
        mark: Any = event.start_mark
        if isinstance(event, yaml.AliasEvent):
            if event.anchor in self._open:
                raise YamlLimitError(None, None, f"alias *{event.anchor} refers to the node "
                                     "that contains it (a recursive alias)", mark)
            node = self.anchors.get(event.anchor)
            if node is not None:  # an undefined alias is PyYAML's own error
                self.alias_nodes += self._size(node)
                if self.alias_nodes > self.max_alias_nodes:
                    raise YamlLimitError(
                        None, None, f"aliases would expand to more than "
                        f"{self.max_alias_nodes} nodes (an alias bomb?): refused", mark)
            self._count(0, event)
            return super().compose_node(parent, index)
        self._count(1, event)
        anchor = getattr(event, "anchor", None)
        if anchor is None:
            return super().compose_node(parent, index)
        self._open.add(anchor)
        try:
            return super().compose_node(parent, index)
        finally:
            self._open.discard(anchor)

    def _count(self, added: int, event: Any) -> None:
        self.nodes += added
        if self.nodes + self.alias_nodes > self.max_nodes:
            raise YamlLimitError(None, None, f"more than {self.max_nodes} values, lists and "
                                 "mappings (aliases expanded): refused", event.start_mark)

    def _size(self, node: yaml.Node) -> int:
        """How many nodes ``node`` is once every alias in it is expanded (memoised)."""
        known = self._sizes.get(id(node))
        if known is not None:
            return known[1]
        size = 1
        if isinstance(node, yaml.SequenceNode):
            size += sum(self._size(item) for item in node.value)
        elif isinstance(node, yaml.MappingNode):
            size += sum(self._size(k) + self._size(v) for k, v in node.value)
        self._sizes[id(node)] = (node, size)
        return size


def safe_load(text: str) -> Any:
    """One YAML document, like ``yaml.safe_load`` but with the alias bound.

    Raises ``yaml.YAMLError`` (``YamlLimitError`` for a refused alias).
    """
    loader = BoundedSafeLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def load_file(path: Path, *, max_bytes: int = MAX_YAML_BYTES) -> Any:
    """``safe_load`` of a file, refusing it unread when it is larger than ``max_bytes``."""
    return safe_load(read_text(path, max_bytes=max_bytes))


def where(exc: yaml.YAMLError) -> tuple[int, int]:
    """1-based line and column of a YAML error (1, 1 when PyYAML does not say)."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    return (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
