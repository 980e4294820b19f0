"""Safe YAML that remembers where every key and value was written.

PyYAML's safe loaders build no Python objects from tags; on top of them this module refuses
duplicate keys, reports syntax errors with a hint for the usual traps, and keeps the
``line:column`` of every node so later errors can point at what the user wrote.

Nothing a file holds makes ``parse_yaml`` raise: a value YAML cannot build (``2027-02-30``,
``!!int abc``, a 5,000-digit number, a lone surrogate escape, nesting 300 deep, a date that
leaves the calendar once its offset is applied) is a problem at that value, one line each.
YAML 1.1 merge keys (``<<: *base``) are resolved here: keys written beside the merge win
over merged ones, and earlier mappings of a merged list over later ones.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import yaml

from engine.errors import Problem

__all__ = ["Located", "Path", "one_line", "parse_yaml"]

Path = tuple[str | int, ...]
# libyaml's parser when PyYAML was built with it (10x faster), else the pure-Python one.
_FastLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_MAX_NODES = 1_000_000  # an alias bomb stops here instead of eating the machine
_PLAIN_TAGS: dict[type[yaml.Node], set[str]] = {
    yaml.MappingNode: {"tag:yaml.org,2002:map"},
    yaml.SequenceNode: {"tag:yaml.org,2002:seq"},
}
_NUMBER_TAGS = {"tag:yaml.org,2002:int", "tag:yaml.org,2002:float"}
_MERGE_TAG = "tag:yaml.org,2002:merge"
# Deeper than this is no schedule, and would exhaust the stack of whatever reads it next.
MAX_DEPTH = 64
# An integer Python cannot print in decimal (its default limit) cannot be stored or shown.
_MAX_INT_DIGITS = 4300
# What str.splitlines() breaks on, and the other control characters: never in a message.
_LINE_BREAKS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
_YAML_BREAK = re.compile("\r\n|[\r\n\x85\u2028\u2029]")
_ODD_BREAK = re.compile("[\r\x85\u2028\u2029]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_NON_PRINTABLE = yaml.reader.Reader.NON_PRINTABLE
# What to write instead, by the tag a scalar was read with (explicitly or implicitly).
_SCALAR_HINTS = {
    "tag:yaml.org,2002:int": "an integer such as 42 (or quote the value to make it a string)",
    "tag:yaml.org,2002:float": "a number such as 1.5 (or quote the value to make it a string)",
    "tag:yaml.org,2002:bool": "true or false",
    "tag:yaml.org,2002:timestamp": "an ISO 8601 date and time such as 2027-01-01T09:00:00",
    "tag:yaml.org,2002:null": "null, ~ or nothing",
    "tag:yaml.org,2002:binary": "base64 text (or quote the value to make it a string)",
}


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


def _mark(node: yaml.Node | yaml.Event) -> tuple[int, int]:
    mark = node.start_mark
    return (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)


def parse_yaml(text: str, file: str) -> Located:
    """Parse one document; syntax and tag problems land in ``problems``, never raise."""
    bad = _NON_PRINTABLE.search(text)
    if bad is not None:  # what PyYAML's reader refuses, located by character, not byte
        doc = Located(file)
        doc.problems.append(_unprintable_problem(text, bad.start(), file))
        return doc
    doc = _parse(text, file)
    if _ODD_BREAK.search(text):
        _relocate(doc, text)
    return doc


def _relocate(doc: Located, text: str) -> None:
    """YAML's lines end at \\r, NEL, LS and PS too; a user's tools count newlines only.

    Every position is moved from YAML's line:column to the newline-counted one.
    """
    starts = [0, *(found.end() for found in _YAML_BREAK.finditer(text))]

    def moved(place: tuple[int, int]) -> tuple[int, int]:
        line, column = place
        if line > len(starts):
            return place
        return _place(text, min(starts[line - 1] + column - 1, len(text)))

    for table in (doc.keys, doc.values):
        for path, place in table.items():
            table[path] = moved(place)
    doc.problems[:] = [Problem(p.file, *moved((p.line, p.column)), p.message) for p in doc.problems]


def _parse(text: str, file: str) -> Located:
    doc = Located(file)
    try:
        _parse_into(doc, _FastLoader(text))
    except RecursionError:
        return _too_deep(text, file)
    except yaml.MarkedYAMLError as exc:
        if "nesting depth" in str(exc):  # libyaml's own limit (1,000 levels)
            return _too_deep(text, file)
        # libyaml's messages differ; PyYAML's own parser gives the ones our hints know.
        doc = Located(file)
        try:
            _parse_into(doc, yaml.SafeLoader(text))
        except yaml.MarkedYAMLError as exc:
            doc.problems.append(_syntax_problem(exc, text, file))
        except RecursionError:  # PyYAML's composer recurses once per level of nesting
            return _too_deep(text, file)
        except yaml.YAMLError as exc:
            doc.problems.append(one_line(Problem(file, 1, 1, f"invalid YAML: {exc}")))
    except yaml.YAMLError as exc:
        doc.problems.append(one_line(Problem(file, 1, 1, f"invalid YAML: {exc}")))
    return doc


def one_line(problem: Problem) -> Problem:
    """The problem as one ``path:line:col: error: message`` line, whatever it quotes."""
    message = _LINE_BREAKS.sub(" ", problem.message).strip()
    if len(message) > 1000:
        message = message[:997] + "..."
    return Problem(problem.file, problem.line, problem.column, message)


def _place(text: str, index: int) -> tuple[int, int]:
    """The 1-based line and column of character ``index`` of ``text``."""
    line = text.count("\n", 0, index) + 1
    return line, index - (text.rfind("\n", 0, index) + 1) + 1


def _unprintable_problem(text: str, index: int, file: str) -> Problem:
    line, column = _place(text, index)
    code = ord(text[index])
    return Problem(
        file,
        line,
        column,
        f"invalid YAML: control character U+{code:04X} is not allowed in a YAML file; "
        f'remove it, or write it as the escape "\\x{code:02x}" inside double quotes'
        if code < 0x100
        else f"invalid YAML: character U+{code:04X} is not allowed in a YAML file; remove it",
    )


def _too_deep(text: str, file: str) -> Located:
    doc = Located(file)
    doc.problems.append(_too_deep_problem(text, file))
    return doc


def _too_deep_problem(text: str, file: str) -> Problem:
    """Where nesting first goes deeper than ``MAX_DEPTH``, found without recursion."""
    depth = 0
    line, column = 1, 1
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):  # no recursion, no limit
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    line, column = _mark(event)
                    break
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
    except yaml.YAMLError:
        pass
    return Problem(file, line, column, _too_deep_message())


def _too_deep_message() -> str:
    return (
        f"invalid YAML: nested more than {MAX_DEPTH} levels deep; "
        "a schedule file holds flatter data"
    )


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

    def build(self, node: yaml.Node, path: Path, depth: int = 0) -> Any:
        self.budget -= 1
        if self.budget < 0:
            raise yaml.YAMLError("document too large (more than a million nodes after aliases)")
        allowed = _PLAIN_TAGS.get(type(node))
        if allowed is not None and node.tag not in allowed:
            self._tag_problem(node, path)
            return None
        if isinstance(node, yaml.MappingNode | yaml.SequenceNode) and depth >= MAX_DEPTH:
            self._refuse(node, path, _too_deep_message())
            return None
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path, depth)
        if isinstance(node, yaml.SequenceNode):
            result = []
            for index, item in enumerate(node.value):
                self.doc.values[(*path, index)] = _mark(item)
                result.append(self.build(item, (*path, index), depth + 1))
            return result
        return self._scalar(node, path)

    def _scalar(self, node: yaml.Node, path: Path) -> Any:
        try:
            value = self.loader.construct_object(node, deep=True)
        except yaml.constructor.ConstructorError:
            self._tag_problem(node, path)
            return None
        except (ValueError, ArithmeticError, LookupError, AttributeError, TypeError) as exc:
            # PyYAML's constructors trust the resolver: an explicit tag (`!!int abc`), a
            # date that is no day (2027-02-30) or a number too long to convert all raise.
            self._refuse(node, path, _unbuildable(node, exc))
            return None
        problem = _value_problem(value, node)
        if problem is not None:
            self._refuse(node, path, problem)
            return None
        if node.tag in _NUMBER_TAGS and not getattr(node, "style", None) and ":" in str(node.value):
            self.doc.sexagesimal[path] = str(node.value)
        return value

    def _refuse(self, node: yaml.Node, path: Path, message: str) -> None:
        self.doc.refused.add(path)
        line, column = _mark(node)
        found = Problem(self.doc.file, line, column, message)
        if found not in self.doc.problems:
            self.doc.problems.append(found)

    def _pairs(self, node: yaml.MappingNode, depth: int) -> tuple[list[Any], list[Any]]:
        """The pairs written in ``node`` and, in priority order, those merged into it."""
        own: list[Any] = []
        merged: list[Any] = []
        for key_node, value_node in node.value:
            if key_node.tag != _MERGE_TAG:
                own.append((key_node, value_node))
                continue
            sources = (
                [value_node]
                if isinstance(value_node, yaml.MappingNode)
                else list(value_node.value)
                if isinstance(value_node, yaml.SequenceNode)
                else [value_node]
            )
            for source in sources:
                if not isinstance(source, yaml.MappingNode) or depth >= MAX_DEPTH:
                    line, column = _mark(source)
                    message = (
                        _too_deep_message()
                        if depth >= MAX_DEPTH
                        else "the merge key '<<' takes a mapping, an alias of one (<<: *base) "
                        "or a list of them (<<: [*a, *b])"
                    )
                    found = Problem(self.doc.file, line, column, message)
                    if found not in self.doc.problems:
                        self.doc.problems.append(found)
                    continue
                self.budget -= len(source.value)
                if self.budget < 0:
                    raise yaml.YAMLError(
                        "document too large (more than a million nodes after aliases)"
                    )
                inner_own, inner_merged = self._pairs(source, depth + 1)
                merged.extend(inner_own + inner_merged)
        return own, merged

    def _mapping(self, node: yaml.MappingNode, path: Path, depth: int) -> dict[Any, Any]:
        own, merged = self._pairs(node, depth)
        result: dict[Any, Any] = {}
        for pairs, from_merge in ((own, False), (merged, True)):
            for key_node, value_node in pairs:
                if not isinstance(key_node, yaml.ScalarNode):
                    line, column = _mark(key_node)
                    found = Problem(
                        self.doc.file, line, column, "mapping keys must be plain strings"
                    )
                    if found not in self.doc.problems:
                        self.doc.problems.append(found)
                    continue
                key = self._key(key_node)
                if key is None:
                    continue
                child = (*path, key)
                if key in result:
                    if from_merge:
                        continue  # written beside the merge, or merged from an earlier map
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
                result[key] = self.build(value_node, child, depth + 1)
        return result

    def _key(self, node: yaml.ScalarNode) -> str | None:
        try:
            key = self.loader.construct_object(node)
        except (
            yaml.YAMLError,
            ValueError,
            ArithmeticError,
            LookupError,
            AttributeError,
            TypeError,
        ):
            key = None
        if not isinstance(key, str):
            key = str(node.value)
        if _SURROGATE.search(key):
            line, column = _mark(node)
            found = Problem(self.doc.file, line, column, _surrogate_message(key))
            if found not in self.doc.problems:
                self.doc.problems.append(found)
            return None
        return key

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


def _unbuildable(node: yaml.Node, exc: BaseException) -> str:
    """Why YAML cannot build a scalar, and what to write instead."""
    raw = str(node.value)
    shown = repr(raw if len(raw) <= 40 else raw[:37] + "...")
    tag = node.tag
    hint = _SCALAR_HINTS.get(tag, "a plain value (or quote it to make it a string)")
    name = tag.replace("tag:yaml.org,2002:", "!!")
    if tag == "tag:yaml.org,2002:int" and len(raw) > _MAX_INT_DIGITS:
        return (
            f"the integer {shown} has {len(raw)} digits, more than {_MAX_INT_DIGITS}; "
            "write a smaller number, or quote it to make it a string"
        )
    if tag == "tag:yaml.org,2002:timestamp":
        reason = str(exc) if isinstance(exc, ValueError | OverflowError) else "not a date"
        return f"{shown} is not a valid date or time ({reason}); write {hint}"
    return f"YAML cannot read {shown} as {name}; write {hint}"


def _value_problem(value: Any, node: yaml.Node) -> str | None:
    """What makes a built scalar unusable downstream (stored, printed, compared), or None."""
    if isinstance(value, str):
        return _surrogate_message(value) if _SURROGATE.search(value) else None
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and value.bit_length() > 14_000:  # 4,214 digits or more
        try:
            str(value)
        except ValueError:  # more digits than Python prints (a long hex, octal or 0b)
            return (
                f"the integer {str(node.value)[:20]}... has more than {_MAX_INT_DIGITS} "
                "decimal digits; write a smaller number, or quote it to make it a string"
            )
        return None
    if isinstance(value, datetime) and value.tzinfo is not None:
        try:
            value.astimezone(UTC)
        except (OverflowError, ValueError):
            return (
                f"{str(node.value)!r} lies outside the years 1 to 9999 once its UTC offset "
                "is applied; write a date and time between 0001-01-02 and 9999-12-30"
            )
    return None


def _surrogate_message(text: str) -> str:
    code = ord(_SURROGATE.search(text).group())  # type: ignore[union-attr]
    return (
        f"the string holds a lone surrogate escape \\u{code:04x}, which is no character; "
        "write the character itself, or a \\U escape of its code point (\\U0001F600)"
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
    return one_line(Problem(file, line, column, f"invalid YAML: {message}"))
