"""YAML in and out, fast: libyaml's C emitter and parser where PyYAML was built with them, the pure
Python ones otherwise, with byte-identical output either way (tested). And safe: every migbench
loader (sweep, fleet file, plan, footprints, catalogue) checks a document's shape before building it
(`shape_problem`: at most so many values, nested at most `MAX_DEPTH` deep) and refuses an explicit
tag its scalar does not fit (`!!int abc`, `!!timestamp abc`: `TagChecks`) and a key given twice in one
mapping (`UniqueKeys`), each with the file, line and field.

Plans at 10,000+ runs hold hundreds of thousands of scalars; PyYAML's representer (pure Python even
under the C emitter) spent most of `migbench plan`'s time on them. `dump` builds the node tree
directly from plain data (dicts with str keys, lists, str, int, float, bool, None) and hands it to
the emitter with the options every migbench file uses: block style, keys in insertion order, width
100, unicode as is.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, NamedTuple

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

C_AVAILABLE = bool(getattr(yaml, "__with_libyaml__", False))

_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_BOOL = "tag:yaml.org,2002:bool"
_NULL = "tag:yaml.org,2002:null"
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"
_FLOATS = yaml.SafeDumper(None)  # type: ignore[arg-type]  # only its represent_float is used: PyYAML's float text


# Characters the two emitters write differently (controls, tabs and line breaks, NEL, the Unicode
# line and paragraph separators, BOM, beyond the Basic Multilingual Plane), and which PyYAML's
# single-quoted style does not always read back: a string holding one is written double-quoted, by
# the pure-Python emitter, in both paths. Plan files rarely hold one (a parameter value with a tab).
_HARD = re.compile("[^\x20-\x7e\xa0-\u2027\u202a-\ud7ff\ue000-\ufefe\uff00-\ufffd]")


class _Hard(Exception):
    """The document holds a string with a character from `_HARD`."""


def _builder(c_path: bool) -> Callable[[Any], Node]:
    """A function from plain data to YAML nodes, as PyYAML's SafeRepresenter would make them."""

    def node(v: Any) -> Node:
        t = type(v)
        if t is str:
            if (v.isascii() and v.isprintable()) or not _HARD.search(v):
                return ScalarNode(_STR, v)
            if c_path:
                raise _Hard
            return ScalarNode(_STR, v, style='"')
        if t is bool:
            return ScalarNode(_BOOL, "true" if v else "false")
        if t is int:
            return ScalarNode(_INT, str(v))
        if t is float:
            return _FLOATS.represent_float(v)
        if v is None:
            return ScalarNode(_NULL, "null")
        if t is dict:
            return MappingNode(_MAP, [(node(k), node(x)) for k, x in v.items()], flow_style=False)
        if t is list or t is tuple:
            return SequenceNode(_SEQ, [node(x) for x in v], flow_style=False)
        raise TypeError(f"cannot write a {t.__name__} to a migbench YAML file")

    return node


_c_node = _builder(c_path=True)
_pure_node = _builder(c_path=False)


class _CachedResolve:
    """Which implicit tag a plain scalar resolves to depends only on its text: remember it (a plan
    repeats the same few thousand scalars hundreds of thousands of times)."""

    _resolved: dict[tuple[Any, ...], str] = {}

    def resolve(self, kind: Any, value: Any, implicit: Any) -> str:
        if kind is not ScalarNode:
            return super().resolve(kind, value, implicit)  # type: ignore[misc]
        key = (value, implicit)
        tag = self._resolved.get(key)
        if tag is None:
            tag = self._resolved[key] = super().resolve(kind, value, implicit)  # type: ignore[misc]
        return tag


class TagChecks:
    """A loader mixin: a scalar whose explicit tag it does not fit (`!!int abc`, `!!float abc`,
    `!!bool abc`, `!!timestamp abc`, `!!int 0x`) is a `ConstructorError` at its line, not a
    ValueError (or KeyError, AttributeError...) from deep inside PyYAML's constructor."""

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)  # type: ignore[misc]
        except (ValueError, TypeError, OverflowError, AttributeError, KeyError, IndexError) as exc:
            if isinstance(node, ScalarNode):
                what = node.tag.rsplit(":", 1)[-1]
                problem = f"{_short(node.value)} is not a valid {what} (it carries the explicit tag !!{what})"
            else:
                problem = f"cannot read this {type(node).__name__[:-4].lower()} ({type(exc).__name__})"
            raise yaml.constructor.ConstructorError(None, None, problem, node.start_mark) from None


class UniqueKeys:
    """A loader mixin: a key given twice in one mapping is a `ConstructorError` at the second one
    (PyYAML keeps the last without a word, so a hand-edited plan with two `runs:` lost the first
    list). Keys a `<<` merge brings in may be given again, as YAML allows; a mapping merged into
    another before it was read itself is not checked again."""

    def flatten_mapping(self, node: MappingNode) -> None:
        self.__dict__.setdefault("_flattened", set()).add(id(node))
        super().flatten_mapping(node)  # type: ignore[misc]

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> Any:
        if isinstance(node, MappingNode) and id(node) not in self.__dict__.get("_flattened", ()):
            first: dict[tuple[str, str], int] = {}
            for key, _ in node.value:
                if not isinstance(key, ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
                    continue
                if (key.tag, key.value) in first:
                    problem = f"duplicate key {_short(key.value)} (first at line {first[key.tag, key.value]}); YAML would keep only the last"
                    raise yaml.constructor.ConstructorError(None, None, problem, key.start_mark)
                first[key.tag, key.value] = key.start_mark.line + 1
        return super().construct_mapping(node, deep)  # type: ignore[misc]


def not_text(node: Node, value: Any) -> str | None:
    """Why a scalar read from a file the user wrote is not text (None when it is): a double-quoted
    escape of a lone surrogate (`"\\uDCFF"`), half a UTF-16 pair, no character. (migbench's own
    files write a path's bytes that are not UTF-8 that way, so only the user's files are checked.)"""
    if isinstance(node, ScalarNode) and node.style == '"' and isinstance(value, str) and _SURROGATE.search(value):
        return f"{_short(value)} holds an escape of a lone surrogate (\\uD800-\\uDFFF), which is not a character"
    return None


_SURROGATE = re.compile("[\ud800-\udfff]")


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


class _PureDumper(_CachedResolve, yaml.SafeDumper):
    pass


class _PureLoader(UniqueKeys, TagChecks, _CachedResolve, yaml.SafeLoader):
    pass


if C_AVAILABLE:

    class _CDumper(_CachedResolve, yaml.CSafeDumper):
        pass

    class _CLoader(UniqueKeys, TagChecks, _CachedResolve, yaml.CSafeLoader):
        pass


# -- the fast path: plain block YAML written directly -----------------------------------------------
#
# PyYAML spends its time per node (representing, resolving, emitting), even under libyaml. Most of a
# plan is a few field names and a few thousand distinct short scalars repeated; `_Fast` writes block
# YAML exactly as PyYAML's emitter would (indentless sequences under keys, two-space indentation,
# `{}`/`[]` for empty collections) for values whose text it can decide alone: scalars PyYAML writes
# plain or single-quoted on one line without wrapping. Anything else raises `_NotSimple`, and that
# top-level key (or that item of a top-level list) goes through PyYAML. Tested byte for byte against
# PyYAML on random documents.

_WIDTH = 100


class _NotSimple(Exception):
    pass


_ANALYZER = yaml.emitter.Emitter(None)  # type: ignore[arg-type]  # only its analyze_scalar is used


def _scalar_style(text: str) -> str | None:
    """How PyYAML writes the string `text` as a mapping value or sequence item: '' (plain), "'"
    (single-quoted), or None (double-quoted or multi-line: not simple)."""
    a = _ANALYZER.analyze_scalar(text)
    if a.multiline:
        return None
    if _resolve_str(text) and a.allow_block_plain:
        return ""
    if a.allow_single_quoted:
        return "'"
    return None


def _resolve_str(text: str) -> bool:
    return _CachedResolve._resolved.get((text, (True, False))) == _STR or (yaml.resolver.Resolver().resolve(ScalarNode, text, (True, False)) == _STR)


class _Fast:
    def __init__(self) -> None:
        self.out: list[str] = []
        self.str_text: dict[str, tuple[str, str | None]] = {}  # value -> (text, style)
        self.key_text: dict[str, str] = {}

    def scalar(self, v: Any, column: int) -> str:
        t = type(v)
        if t is str:
            got = self.str_text.get(v)
            if got is None:
                style = _scalar_style(v) if v else None
                text = v if style == "" else ("'" + v.replace("'", "''") + "'" if style == "'" else "")
                got = self.str_text[v] = (text, style)
            text, style = got
            if style is None or column + len(text) > _WIDTH:
                raise _NotSimple
            return text
        if t is bool:
            return "true" if v else "false"
        if t is int:
            return str(v)
        if t is float:
            return str(_FLOATS.represent_float(v).value)
        if v is None:
            return "null"
        raise _NotSimple

    def key(self, k: Any) -> str:
        text = self.key_text.get(k) if type(k) is str else None
        if text is None:
            if type(k) is not str or not k:
                raise _NotSimple
            a = _ANALYZER.analyze_scalar(k)
            if a.multiline or not a.allow_block_plain or not _resolve_str(k) or len(k) > 128:
                raise _NotSimple
            text = self.key_text[k] = k
        return text

    def mapping(self, d: dict[Any, Any], indent: int, first_prefix: str | None = None) -> None:
        """Block mapping at `indent`; `first_prefix` replaces the first line's indentation (`- `)."""
        pad = " " * indent
        for n, (k, v) in enumerate(d.items()):
            head = (first_prefix if n == 0 and first_prefix is not None else pad) + self.key(k) + ":"
            self.value(v, head, indent)

    def value(self, v: Any, head: str, indent: int) -> None:
        t = type(v)
        if t is dict:
            if not v:
                self.out.append(head + " {}")
            else:
                self.out.append(head)
                self.mapping(v, indent + 2)
        elif t is list or t is tuple:
            if not v:
                self.out.append(head + " []")
            else:
                self.out.append(head)
                self.sequence(v, indent)
        else:
            self.out.append(head + " " + self.scalar(v, len(head) + 1))

    def sequence(self, items: Any, indent: int) -> None:
        """Block sequence items at `indent` (PyYAML writes them indentless under a mapping key)."""
        pad = " " * indent
        for item in items:
            t = type(item)
            if t is dict:
                if not item:
                    self.out.append(pad + "- {}")
                else:
                    self.mapping(item, indent + 2, first_prefix=pad + "- ")
            elif t is list or t is tuple:
                raise _NotSimple  # a sequence in a sequence: not in migbench's files
            else:
                self.out.append(pad + "- " + self.scalar(item, indent + 2))


def _fast_dump(doc: dict[Any, Any], slow: Callable[[Any], str]) -> str:
    """Top-level keys (and items of top-level lists) written by `_Fast`, or by `slow` when not simple."""
    f = _Fast()
    for k, v in doc.items():
        try:
            mark = len(f.out)
            if type(v) in (list, tuple) and v:
                f.out.append(f.key(k) + ":")
                for item in v:
                    at = len(f.out)
                    try:
                        f.sequence([item], 0)
                    except _NotSimple:
                        del f.out[at:]
                        f.out.append(slow([item]).rstrip("\n"))
            else:
                f.value(v, f.key(k) + ":", 0)
        except _NotSimple:
            del f.out[mark:]
            f.out.append(slow({k: v}).rstrip("\n"))
    return "\n".join(f.out) + "\n"


def dump(doc: Any, *, pure: bool = False) -> str:
    """`doc` as YAML text (libyaml's emitter unless `pure` or unavailable; the same bytes either way).
    A mapping goes through the fast path first (see `_Fast`)."""
    if not pure and type(doc) is dict and doc:
        return _fast_dump(doc, lambda part: _pyyaml_dump(part, pure=False))
    return _pyyaml_dump(doc, pure=pure)


def _pyyaml_dump(doc: Any, *, pure: bool) -> str:
    if not pure and C_AVAILABLE:
        try:
            return yaml.serialize(_c_node(doc), Dumper=_CDumper, width=100, allow_unicode=True)
        except _Hard:
            pass
    return yaml.serialize(_pure_node(doc), Dumper=_PureDumper, width=100, allow_unicode=True)


def load(text: str, *, pure: bool = False) -> Any:
    """Parse YAML text (libyaml's parser unless `pure` or unavailable). Raises yaml.YAMLError (a
    scalar that does not fit its explicit tag too: `TagChecks`); RecursionError past Python's depth
    (call `shape_problem` first)."""
    loader = _PureLoader if pure or not C_AVAILABLE else _CLoader
    return yaml.load(text, Loader=loader)  # noqa: S506 - a safe loader either way


# -- shape limits: refused before any Python object of the document is built -------------------

MAX_DEPTH = 100
"""How deeply a migbench file may nest collections (its own files nest under 10; PyYAML recurses
per level and Python stops near 1,000 frames)."""


class Shape(NamedTuple):
    """Why a document is refused: the message, its 1-based line and field path."""

    message: str
    line: int | None
    field: str | None


def shape_bounds(text: str) -> tuple[int, int]:
    """Upper bounds of the number of values (nodes) and the nesting depth of the YAML in `text`,
    from character counts alone (fast, no parse): each value needs a line, an indicator (`,` `[`
    `{` `:` `-` `?`) or an alias (`*`) before it, a mapping entry two values; each level of nesting
    an open bracket, or an indentation column or `-`/`?`/`:` at the start of a line."""
    marks = sum(text.count(c) for c in "\n,[{:-?*")
    flow = text.count("[") + text.count("{") - text.count("[]") - text.count("{}")
    return 2 * marks + 2, flow


def shape_problem(text: str, *, max_nodes: int, max_depth: int = MAX_DEPTH, max_items: int | None = None) -> Shape | None:
    """Whether `text` holds more than `max_nodes` values, nests deeper than `max_depth` or (given
    `max_items`) has a list or mapping of more than `max_items` items, decided
    before any node or object is built: by `shape_bounds` when they suffice, else by counting
    the parser's events (libyaml's, when built), stopping at the first value past a limit. A
    syntax error is left to the loader that follows (None)."""
    nodes, flow = shape_bounds(text)
    lead = max_depth - flow - 2
    if nodes <= max_nodes and lead > 0 and not re.search(rf"^[ \t?:-]{{{lead}}}", text, re.M):
        return None
    for fast in (True, False) if C_AVAILABLE else (False,):
        try:
            return _count_events(yaml.CSafeLoader(text) if fast else yaml.SafeLoader(text), max_nodes, max_depth, max_items or max_nodes)
        except yaml.YAMLError as exc:
            if "maximum nesting depth" in str(exc):  # libyaml's own limit (deeper than ours): said at once
                mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
                return Shape(f"nested more than {max_depth} levels deep", None if mark is None else mark.line + 1, None)
            continue  # a syntax error to libyaml: PyYAML's parser (which does not recurse) tries
    return None  # a syntax error: the loader that follows says where


def _count_events(loader: Any, max_nodes: int, max_depth: int, max_items: int) -> Shape | None:
    stack: list[list[Any]] = []  # per open collection: [is_map, key or index, expecting a key, items]
    count = 0
    try:
        while loader.check_event():
            ev = loader.get_event()
            opens = isinstance(ev, (yaml.SequenceStartEvent, yaml.MappingStartEvent))
            if opens or isinstance(ev, (yaml.ScalarEvent, yaml.AliasEvent)):
                count += 1
                top = stack[-1] if stack else None
                if top is not None and top[0] and top[2] and isinstance(ev, yaml.ScalarEvent):
                    top[1], top[2] = ev.value, False
                    continue
                if count > max_nodes:
                    return Shape(f"more than {max_nodes:,} values: too large for this file", _line(ev), _path(stack))
                if opens:
                    if len(stack) >= max_depth:
                        return Shape(f"nested more than {max_depth} levels deep", _line(ev), _path(stack))
                    stack.append([isinstance(ev, yaml.MappingStartEvent), None if isinstance(ev, yaml.MappingStartEvent) else 0, True, 0])
                else:
                    _advance(stack)
            elif isinstance(ev, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
                stack.pop()
                _advance(stack)
            if stack and stack[-1][3] > max_items:
                return Shape(f"a list or mapping of more than {max_items:,} items: too large for this file", _line(ev), _path(stack))
    finally:
        loader.dispose()
    return None


def _line(ev: Any) -> int | None:
    mark = getattr(ev, "start_mark", None)
    return None if mark is None else int(mark.line) + 1


def _advance(stack: list[list[Any]]) -> None:
    """A value ended: the parent mapping expects a key next, the parent sequence its next item."""
    if stack:
        top = stack[-1]
        top[3] += 1
        if top[0]:
            top[2] = True
        else:
            top[1] += 1


def _path(stack: list[list[Any]]) -> str | None:
    if len(stack) > 12:  # a deep path: its start and end say where
        head, tail = _path(stack[:8]) or "", _path(stack[-3:]) or ""
        return f"{head}...({len(stack) - 11} levels)...{tail if tail.startswith('[') else '.' + tail}"
    parts: list[str] = []
    for is_map, key, *_ in stack:
        if is_map:
            if key is not None:
                parts.append(("." if parts else "") + str(key))
        else:
            parts.append(f"[{key}]")
    return "".join(parts) or None


def _compose(text: str) -> Node | None:
    try:
        return yaml.compose(text, Loader=yaml.CSafeLoader if C_AVAILABLE else yaml.SafeLoader)
    except (yaml.YAMLError, RecursionError):
        return None


def _walk(root: Node | None) -> Any:
    """(node, field path) of every node under `root`, keys included (with their value's path)."""
    todo: list[tuple[Node, str]] = [(root, "")] if root is not None else []
    while todo:
        node, path = todo.pop()
        yield node, path
        if isinstance(node, MappingNode):
            for k, v in node.value:
                key = k.value if isinstance(k, ScalarNode) else "?"
                sub = f"{path}.{key}" if path else str(key)
                todo.append((v, sub))
                todo.append((k, sub))
        elif isinstance(node, SequenceNode):
            todo.extend((v, f"{path}[{i}]") for i, v in enumerate(node.value))


def field_at(text: str, mark: Any) -> str | None:
    """The field path (`a.b[2].c`) of the node that starts at `mark` (a PyYAML mark) in `text`,
    found by composing the document (no object built, no tag resolved); None when not found. For
    error messages only: call it after `shape_problem`."""
    if mark is None:
        return None
    for node, path in _walk(_compose(text)):
        if node.start_mark.index == mark.index:
            return path or None
    return None


def field_lines(text: str) -> dict[str, int]:
    """Field path -> 1-based line of its value, for every field of the document in `text` (for
    error messages only: call it after `shape_problem`)."""
    out: dict[str, int] = {}
    for node, path in _walk(_compose(text)):
        out[path] = node.start_mark.line + 1
    return out


def error_problem(exc: BaseException, text: str) -> tuple[str, int | None, str | None]:
    """A PyYAML error (or RecursionError) as (message, 1-based line, field path)."""
    if isinstance(exc, RecursionError):
        return f"nested too deeply (more than {MAX_DEPTH} levels)", None, None
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    what = " ".join(x for x in (getattr(exc, "context", None), getattr(exc, "problem", None)) if x) or str(exc)
    return what, (mark.line + 1 if mark is not None else None), field_at(text, mark)


def load_checked(text: str, file: str, what: str, *, max_nodes: int, hint: str) -> Any:
    """`load` of a file of `what` (the "footprints file") after `shape_problem`; any failure an
    `InputError` naming the file, line and field."""
    from migbench.errors import InputError, Problem

    shape = shape_problem(text, max_nodes=max_nodes)
    if shape is not None:
        raise InputError(f"{file}: refused as a {what}", hint=hint, problems=[Problem(shape.message, file, shape.line, shape.field)])
    try:
        return load(text)
    except (yaml.YAMLError, RecursionError) as exc:
        message, line, field = error_problem(exc, text)
        raise InputError(f"{file}: not valid YAML for a {what}", hint=hint, problems=[Problem(message, file, line, field)]) from None
