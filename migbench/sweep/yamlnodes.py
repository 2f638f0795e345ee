"""YAML with locations: every node keeps its line and field path, and every problem is collected
(with file, line, field and a hint) instead of stopping at the first.
"""

from __future__ import annotations

import datetime as _dt
import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from migbench.errors import Problem
from migbench.yamlio import TagChecks, UniqueKeys, not_text

MAX_ALIAS_VALUES = 100_000
"""YAML aliases may add at most this many values to a document: an alias bomb (aliases of aliases,
each doubling the document) is refused while it is read, after a few dozen values, not after
expanding it."""


class AliasLimitError(yaml.MarkedYAMLError):
    """The document's aliases expand to more than `MAX_ALIAS_VALUES` values."""


class LimitedSafeLoader(UniqueKeys, TagChecks, yaml.SafeLoader):
    """PyYAML's SafeLoader that counts, while composing, how many values each alias brings in (the
    size of the anchored node, its own aliases included) and stops past `MAX_ALIAS_VALUES`."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._sizes: dict[int, int] = {}
        self._alias_values = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        alias = self.check_event(yaml.AliasEvent)
        mark = self.peek_event().start_mark
        node = super().compose_node(parent, index)
        if node is None:  # pragma: no cover - PyYAML returns a node for every event it composes
            return node
        if alias:
            self._alias_values += self._sizes.get(id(node), 1)  # an ancestor (a cycle) counts 1 here
            if self._alias_values > MAX_ALIAS_VALUES:
                raise AliasLimitError(None, None, f"YAML aliases expand to more than {MAX_ALIAS_VALUES:,} values (an alias bomb?)", mark)
        else:
            self._sizes[id(node)] = 1 + sum([self._sizes.get(id(c), 1) for c in _children(node)])
        return node


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for kv in node.value for n in kv]
    return []


def reader_error_line(exc: yaml.reader.ReaderError, text: str) -> int:
    """The 1-based line of a character PyYAML's reader refuses (a control character)."""
    return text.count("\n", 0, max(0, exc.position)) + 1


def reader_error_char(exc: yaml.reader.ReaderError) -> str:
    """The character PyYAML's reader refuses, as `U+0013`."""
    c = exc.character
    return f"U+{c if isinstance(c, int) else ord(c[:1] or chr(0)):04X}"


class Loader(LimitedSafeLoader):
    """The sweep loader: also reads `1e-5` (no dot) as a float, as YAML 1.2 does."""


Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


@dataclass(eq=False)
class Node:
    line: int
    path: str


@dataclass(eq=False)
class ScalarNode(Node):
    value: Any
    raw: str


@dataclass(eq=False)
class SeqNode(Node):
    items: list[Node]


@dataclass(eq=False)
class Entry:
    key: Any
    key_line: int
    path: str
    value: Node


@dataclass(eq=False)
class MapNode(Node):
    entries: dict[Any, Entry]

    def get(self, key: str) -> Node | None:
        """The value at `key`; None when absent or null (`run_cap: null` means "not set", as in W&B)."""
        e = self.entries.get(key)
        if e is None or (isinstance(e.value, ScalarNode) and e.value.value is None):
            return None
        return e.value


def join_path(path: str, key: Any) -> str:
    return str(key) if not path else f"{path}.{key}"


class Converter:
    """Turns a composed YAML node graph into `Node`s with lines and field paths."""

    def __init__(self, loader: LimitedSafeLoader, problems: Problems):
        self.loader = loader
        self.problems = problems
        self.budget = 2_000_000  # alias bombs
        self.active: set[int] = set()

    def convert(self, node: yaml.Node, path: str) -> Node:
        self.budget -= 1
        if self.budget < 0:
            raise Abort("the file expands to too many values (YAML aliases?)")
        line = node.start_mark.line + 1
        if isinstance(node, yaml.ScalarNode):
            try:
                value = self.loader.construct_object(node, deep=True)
            except yaml.constructor.ConstructorError as exc:  # `!!int abc`: TagChecks
                self.problems.add(str(exc.problem), line=line, field=path or None, hint="remove the tag, or write a value of its type")
                value = node.value
            return ScalarNode(line, path, self._text(node, value, line, path), node.value)
        if id(node) in self.active:
            raise Abort(f"line {line}: a YAML alias refers to itself")
        self.active.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                return SeqNode(line, path, [self.convert(n, f"{path}[{i}]") for i, n in enumerate(node.value)])
            assert isinstance(node, yaml.MappingNode)
            return self._mapping(node, path, line)
        finally:
            self.active.discard(id(node))

    def _text(self, node: yaml.Node, value: Any, line: int, path: str) -> Any:
        """`value`, or, when it is not text (`yamlio.not_text`), a problem and the value with its
        surrogates replaced (the rest of the file is still checked)."""
        why = not_text(node, value)
        if why is None:
            return value
        self.problems.add(why, line=line, field=path or None, hint="write the character itself (or a \\U escape of 8 hex digits)")
        return value.encode("utf-8", "replace").decode()

    def _mapping(self, node: yaml.MappingNode, path: str, line: int) -> MapNode:
        entries: dict[Any, Entry] = {}
        merged: list[Entry] = []
        for key_node, value_node in node.value:
            key_line = key_node.start_mark.line + 1
            if key_node.tag == "tag:yaml.org,2002:merge":
                sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                for src in sources:
                    if not isinstance(src, yaml.MappingNode):
                        self.problems.add("a `<<` merge key must refer to a mapping", line=key_line, field=path)
                        continue
                    sub = self.convert(src, path)
                    assert isinstance(sub, MapNode)
                    merged.extend(sub.entries.values())
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                self.problems.add("a mapping key must be a plain value, not a list or mapping", line=key_line, field=path)
                continue
            key = self._text(key_node, self.loader.construct_object(key_node, deep=True), key_line, path)
            if key in entries:
                self.problems.add(
                    f"duplicate key {key!r} (first at line {entries[key].key_line})",
                    line=key_line,
                    field=join_path(path, key),
                    hint="YAML keeps only the last one; remove or rename one of them",
                )
                continue
            kpath = join_path(path, key)
            entries[key] = Entry(key, key_line, kpath, self.convert(value_node, kpath))
        out: dict[Any, Entry] = {}
        for e in merged:  # merged keys first (as PyYAML), explicit keys win, earlier merges win
            if e.key not in entries and e.key not in out:
                out[e.key] = e
        out.update(entries)
        return MapNode(line, path, out)


_MOVED = {
    "resources": "memory:, profiles: and the estimator's inputs (memory: {estimate: {...}}) go directly in the group",
    "estimate": "write memory: {estimate: {...}}",
    "headroom": "headroom is an estimator input: memory: {estimate: {..., headroom: 0.15}}",
    "memory_keys": "memory_keys (calibration) is not supported yet; give memory per group or a table",
    "calibrate": "calibration is not supported yet; give memory per group, a table or an estimate",
    "max_concurrent": "concurrency follows the plan's MIG instances; see max_runs_per_instance",
    "seed": "seed is a sweep-level key (top level)",
    "timeout": "timeout is a group field (or under defaults:)",
    "args": "parameters are written under parameters:, and ${args} in the command passes them",
}


def unknown_key_hint(key: Any, allowed: Sequence[str], known: str) -> str:
    """`did you mean 'x'?`, or where the key belongs, then the keys allowed here."""
    moved = _MOVED.get(str(key))
    if moved:
        return f"{moved}; {known}"
    close = difflib.get_close_matches(str(key), list(allowed), n=1, cutoff=0.6)
    return (f"did you mean {close[0]!r}? " if close else "") + known


class Abort(Exception):
    """A problem that stops parsing (the structure cannot be read at all)."""


# =============================================================================================
# Problems
# =============================================================================================


class Problems:
    """Collects problems, once each. A problem in `defaults:` is found once per group that inherits
    it; it is reported once, naming the groups unless it concerns all of them."""

    def __init__(self, file: str):
        self.file = file
        self._items: dict[tuple[Any, ...], tuple[Problem, list[str]]] = {}
        self.all_groups: list[str] = []
        self._notes: dict[tuple[Any, ...], Problem] = {}

    def note(self, message: str, *, line: int | None = None, field: str | None = None) -> None:
        """Something worth saying that does not stop loading (a key ignored, a parameter unused)."""
        self._notes.setdefault((message, line, field), Problem(message, self.file, line, field or None))

    @property
    def notes(self) -> tuple[str, ...]:
        return tuple(str(p) for p in sorted(self._notes.values(), key=lambda p: (p.line is None, p.line or 0)))

    @property
    def items(self) -> list[tuple[Problem, list[str]]]:
        return list(self._items.values())

    def add(
        self,
        message: str,
        *,
        line: int | None = None,
        field: str | None = None,
        hint: str | None = None,
        group: str | None = None,
    ) -> None:
        key = (message, line, field)
        if key not in self._items:
            self._items[key] = (Problem(message, self.file, line, field or None, hint), [])
        groups = self._items[key][1]
        if group is not None and group not in groups:
            groups.append(group)

    def sorted(self) -> list[Problem]:
        out = []
        for prob, groups in self._items.values():
            if groups and set(groups) != set(self.all_groups):
                names = ", ".join(repr(g) for g in groups)
                prob = Problem(
                    f"{prob.message} (in group{'s' if len(groups) > 1 else ''} {names})",
                    prob.file,
                    prob.line,
                    prob.field,
                    prob.hint,
                )
            out.append(prob)
        return sorted(out, key=lambda p: (p.line is None, p.line or 0))


def describe(node: Node) -> str:
    """`a mapping with keys 'a', 'b'`, `a list`, `a string ('x')`... for "expected X, got Y"."""
    if isinstance(node, MapNode):
        keys = ", ".join(repr(k) for k in node.entries)
        return f"a mapping with keys {keys}" if keys else "an empty mapping"
    if isinstance(node, SeqNode):
        return "a list" if node.items else "an empty list"
    assert isinstance(node, ScalarNode)
    return describe_value(node.value)


def short_repr(v: Any, width: int = 60) -> str:
    """`repr(v)`, cut to about `width` characters (a 300-character name stays readable)."""
    text = repr(v)
    return text if len(text) <= width else text[: width - 3] + "..."


def describe_value(v: Any) -> str:
    text = repr(v)
    if len(text) > 40:
        text = text[:37] + "..."
    if v is None:
        return "nothing (null)"
    if isinstance(v, bool):
        return f"a boolean ({str(v).lower()})"
    if isinstance(v, int):
        return f"an integer ({v})"
    if isinstance(v, float):
        return f"a number ({v!r})"
    if isinstance(v, str):
        return f"a string ({text})"
    if isinstance(v, (_dt.date, _dt.datetime)):
        return f"a date ({v}); quote it to make it a string"
    return type(v).__name__
