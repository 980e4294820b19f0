"""Safe YAML that remembers where every key and value was written.

PyYAML's safe loaders build no Python objects from tags; on top of them this module refuses
duplicate keys, reports syntax errors with a hint for the usual traps, and keeps the
``line:column`` of every node so later errors can point at what the user wrote.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from engine.errors import Problem

__all__ = ["Located", "Path", "parse_yaml"]

Path = tuple[str | int, ...]
# libyaml's parser when PyYAML was built with it (10x faster), else the pure-Python one.
_FastLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_MAX_NODES = 1_000_000  # an alias bomb stops here instead of eating the machine
_PLAIN_TAGS: dict[type[yaml.Node], set[str]] = {
    yaml.MappingNode: {"tag:yaml.org,2002:map"},
    yaml.SequenceNode: {"tag:yaml.org,2002:seq"},
}
_NUMBER_TAGS = {"tag:yaml.org,2002:int", "tag:yaml.org,2002:float"}


@dataclass
class Located:
    """A parsed document and the 1-based position of each key and value in it."""

    file: str
    data: Any = None
    keys: dict[Path, tuple[int, int]] = field(default_factory=dict)
    values: dict[Path, tuple[int, int]] = field(default_factory=dict)
    sexagesimal: dict[Path, str] = field(default_factory=dict)
    refused: set[Path] = field(default_factory=set)  # values dropped for a forbidden tag
    problems: list[Problem] = field(default_factory=list)

    def where(self, path: Path, *, key: bool = False) -> tuple[int, int]:
        """The position of ``path``, or of its nearest written ancestor."""
        table = self.keys if key else self.values
        for end in range(len(path), -1, -1):
            found = table.get(path[:end]) or self.values.get(path[:end])
            if found:
                return found
        return (1, 1)

    def problem(self, path: Path, message: str, *, key: bool = False) -> Problem:
        line, column = self.where(path, key=key)
        found = Problem(self.file, line, column, message)
        if found not in self.problems:
            self.problems.append(found)
        return found


def _mark(node: yaml.Node) -> tuple[int, int]:
    return (node.start_mark.line + 1, node.start_mark.column + 1)


def parse_yaml(text: str, file: str) -> Located:
    """Parse one document; syntax and tag problems land in ``problems``, never raise."""
    doc = Located(file)
    try:
        _parse_into(doc, _FastLoader(text))
    except yaml.MarkedYAMLError:
        # libyaml's messages differ; PyYAML's own parser gives the ones our hints know.
        doc = Located(file)
        try:
            _parse_into(doc, yaml.SafeLoader(text))
        except yaml.MarkedYAMLError as exc:
            doc.problems.append(_syntax_problem(exc, text, file))
    except yaml.YAMLError as exc:
        doc.problems.append(Problem(file, 1, 1, f"not valid YAML: {exc}"))
    return doc


def _parse_into(doc: Located, loader: Any) -> None:
    try:
        node = loader.get_single_node()
        if node is not None:
            doc.values[()] = _mark(node)
            doc.data = _Builder(loader, doc).build(node, ())
    finally:
        loader.dispose()


class _Builder:
    def __init__(self, loader: Any, doc: Located) -> None:
        self.loader = loader
        self.doc = doc
        self.budget = _MAX_NODES

    def build(self, node: yaml.Node, path: Path) -> Any:
        self.budget -= 1
        if self.budget < 0:
            raise yaml.YAMLError("document too large (more than a million nodes after aliases)")
        allowed = _PLAIN_TAGS.get(type(node))
        if allowed is not None and node.tag not in allowed:
            self._tag_problem(node, path)
            return None
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            result = []
            for index, item in enumerate(node.value):
                self.doc.values[(*path, index)] = _mark(item)
                result.append(self.build(item, (*path, index)))
            return result
        try:
            value = self.loader.construct_object(node, deep=True)
        except yaml.constructor.ConstructorError:
            self._tag_problem(node, path)
            return None
        if node.tag in _NUMBER_TAGS and not getattr(node, "style", None) and ":" in str(node.value):
            self.doc.sexagesimal[path] = str(node.value)
        return value

    def _mapping(self, node: yaml.MappingNode, path: Path) -> dict[Any, Any]:
        self.loader.flatten_mapping(node)  # YAML merge keys `<<: *base`
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                line, column = _mark(key_node)
                self.doc.problems.append(
                    Problem(self.doc.file, line, column, "mapping keys must be plain strings")
                )
                continue
            key = self.loader.construct_object(key_node)
            if not isinstance(key, str):
                key = str(key_node.value)
            child = (*path, key)
            if key in result:
                first_line = self.doc.keys[child][0]
                line, column = _mark(key_node)
                self.doc.problems.append(
                    Problem(
                        self.doc.file,
                        line,
                        column,
                        f"duplicate key {key!r} (first written on line {first_line}); "
                        "keep one of them",
                    )
                )
                continue
            self.doc.keys[child] = _mark(key_node)
            self.doc.values[child] = _mark(value_node)
            result[key] = self.build(value_node, child)
        return result

    def _tag_problem(self, node: yaml.Node, path: Path) -> None:
        self.doc.refused.add(path)
        line, column = _mark(node)
        tag = node.tag.replace("tag:yaml.org,2002:", "!!")
        self.doc.problems.append(
            Problem(
                self.doc.file,
                line,
                column,
                f"YAML tag {tag!r} is not allowed; schedule files hold plain data "
                "(strings, numbers, booleans, dates, lists and mappings)",
            )
        )


def _syntax_problem(exc: yaml.MarkedYAMLError, text: str, file: str) -> Problem:
    mark = exc.problem_mark or exc.context_mark
    line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
    message = " ".join(str(part) for part in (exc.context, exc.problem) if part)
    source_line = text.splitlines()[line - 1] if 0 < line <= len(text.splitlines()) else ""
    if "alias" in (exc.context or "") or "anchor" in (exc.context or ""):
        if "cron" in source_line or "*" in source_line:
            message = (
                "a value starting with '*' is read as a YAML alias; quote the cron expression, "
                'e.g. cron: "*/5 * * * *"'
            )
            column = source_line.find("*") + 1 or column
    elif "expected a single document" in message:
        message = "a schedule file holds one YAML document; remove the extra '---' separator"
    return Problem(file, line, column, f"invalid YAML: {message}")
