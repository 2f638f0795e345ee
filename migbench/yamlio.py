"""YAML in and out, fast: libyaml's C emitter and parser where PyYAML was built with them, the pure
Python ones otherwise, with byte-identical output either way (tested).

Plans at 10,000+ runs hold hundreds of thousands of scalars; PyYAML's representer (pure Python even
under the C emitter) spent most of `migbench plan`'s time on them. `dump` builds the node tree
directly from plain data (dicts with str keys, lists, str, int, float, bool, None) and hands it to
the emitter with the options every migbench file uses: block style, keys in insertion order, width
100, unicode as is.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

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


class _PureDumper(_CachedResolve, yaml.SafeDumper):
    pass


class _PureLoader(_CachedResolve, yaml.SafeLoader):
    pass


if C_AVAILABLE:

    class _CDumper(_CachedResolve, yaml.CSafeDumper):
        pass

    class _CLoader(_CachedResolve, yaml.CSafeLoader):
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
    return _CachedResolve._resolved.get((text, (True, False))) == _STR or (
        yaml.resolver.Resolver().resolve(ScalarNode, text, (True, False)) == _STR
    )


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
    """Parse YAML text (libyaml's parser unless `pure` or unavailable). Raises yaml.YAMLError."""
    loader = _PureLoader if pure or not C_AVAILABLE else _CLoader
    return yaml.load(text, Loader=loader)  # noqa: S506 - a safe loader either way
