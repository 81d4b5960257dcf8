"""YAML read as policy files need it: every key and value keeps its FILE:LINE:COL.

PyYAML composes each document into nodes (bounded by ``safeyaml``) and they are converted
here, recording where each key and value is, so ``loader`` can point every problem at the
key or value an SRE has to change. A file without any document is a problem of its own: a
policy file emptied by mistake must not silently drop its pool.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gearshift import safeyaml

Path_ = tuple[str | int, ...]
Position = tuple[int, int]  # 1-based line, column


@dataclass
class Document:
    """One YAML document with the position of every key and value in it."""

    file: Path
    data: Any
    start: Position
    values: dict[Path_, Position] = field(default_factory=dict)
    keys: dict[Path_, Position] = field(default_factory=dict)

    def at(self, path: Path_, *, key: bool = False) -> Position:
        """The position of ``path`` or, failing that, of its nearest ancestor."""
        if key and path in self.keys:
            return self.keys[path]
        while path:
            if path in self.values:
                return self.values[path]
            path = path[:-1]
        return self.start

    def problem(self, path: Path_, message: str, *, key: bool = False) -> str:
        line, col = self.at(path, key=key)
        return f"{self.file}:{line}:{col}: {message}"


def _position(mark: yaml.Mark) -> Position:
    return (mark.line + 1, mark.column + 1)


def _convert(loader: yaml.SafeLoader, node: yaml.Node, path: Path_, doc: Document,
             problems: list[str]) -> Any:
    doc.values[path] = _position(node.start_mark)
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)  # resolve YAML merge keys (<<)
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, str | int | float | bool):
                problems.append(doc.problem(path, "mapping keys must be plain scalars"))
                continue
            key = str(key)
            doc.keys[(*path, key)] = _position(key_node.start_mark)
            if key in result:
                problems.append(doc.problem((*path, key), f"duplicate key {key!r}", key=True))
                continue
            result[key] = _convert(loader, value_node, (*path, key), doc, problems)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_convert(loader, item, (*path, i), doc, problems)
                for i, item in enumerate(node.value)]
    return loader.construct_object(node, deep=True)


def _line_col(text: str, offset: int) -> Position:
    """1-based line and column of a character offset."""
    before = text[:offset]
    return before.count("\n") + 1, offset - (before.rfind("\n") + 1) + 1


def read_documents(file: Path, problems: list[str], *, max_bytes: int) -> list[Document]:
    try:
        text = safeyaml.read_text(file, max_bytes=max_bytes)
    except safeyaml.FileTooLarge as exc:
        problems.append(f"{file}:1:1: {exc}")
        return []
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(f"{file}:1:1: cannot read file: {exc.__class__.__name__}: {exc}")
        return []
    documents = []
    try:
        # its reader already refuses control characters; its composer bounds aliases
        loader = safeyaml.BoundedSafeLoader(text)
    except yaml.reader.ReaderError as exc:
        line, col = _line_col(text, exc.position)
        problems.append(f"{file}:{line}:{col}: not readable YAML: {exc.reason} "
                        f"(character {exc.character!r})")
        return []
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            doc = Document(file=file, data=None, start=_position(node.start_mark))
            doc.data = _convert(loader, node, (), doc, problems)
            documents.append(doc)
    except safeyaml.YamlLimitError as exc:
        line, col = safeyaml.where(exc)
        problems.append(f"{file}:{line}:{col}: {exc.problem}")
        return []
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = _position(mark) if mark else (1, 1)
        problems.append(f"{file}:{line}:{col}: YAML syntax error: {exc.problem or exc}")
        return []
    except (yaml.YAMLError, RecursionError) as exc:
        problems.append(f"{file}:1:1: not readable YAML: {exc.__class__.__name__} "
                        f"(nested too deeply?)")
        return []
    finally:
        loader.dispose()
    if not documents:
        problems.append(f"{file}:1:1: empty: no YAML document (expected kind: Pool or "
                        f"kind: Providers)")
    return documents
