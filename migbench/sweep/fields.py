"""Typed readers for sweep fields: each check reports through one context, which knows the group."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import Any

from migbench import units
from migbench.sweep.schema import ENV_NAME_RE, READ_KINDS, WANDB_ONLY_KEYS, ZERO_WAIT_RE, Key, declared, keys_of
from migbench.sweep.yamlnodes import Entry, MapNode, Node, Problems, ScalarNode, describe, join_path, unknown_key_hint


def wandb_only_note(keys: Sequence[str]) -> str:
    what = ", ".join(f"`{k}`" for k in keys)
    return (
        f"{what}: W&B-only key{'s' if len(keys) > 1 else ''}, ignored (migbench plans and launches every run "
        "itself; W&B's search, early stopping and project settings do not apply)"
    )


class Ctx:
    def __init__(self, problems: Problems, group: str | None = None):
        self.p = problems
        self.group = group
        self.failed = False

    def at(
        self,
        node: Node | Entry | None,
        message: str,
        hint: str | None = None,
        *,
        key: bool = False,
        field: str | None = None,
    ) -> None:
        """Report a problem at a node's value line (or its key line for an `Entry` when key=True)."""
        self.failed = True
        if node is None:
            self.p.add(message, hint=hint, field=field)
            return
        if isinstance(node, Entry):
            line, path = (node.key_line if key else node.value.line), node.path
        else:
            line, path = node.line, node.path
        path = field or path
        group = self.group if self.group is not None and path.startswith("defaults") else None
        self.p.add(message, line=line, field=path or None, hint=hint, group=group)

    def note(self, node: Node | Entry, message: str, *, key: bool = False) -> None:
        """A note (not a problem) at a node, or at an entry's key line with key=True."""
        if isinstance(node, Entry):
            self.p.note(message, line=node.key_line if key else node.value.line, field=node.path or None)
        else:
            self.p.note(message, line=node.line, field=node.path or None)

    def missing(self, m: MapNode, key: str, message: str, hint: str | None = None) -> None:
        """A required key is absent: reported at the mapping's first line, field = its would-be path."""
        self.at(m, message, hint, field=join_path(m.path, key))

    # -- structural checks ------------------------------------------------------------------
    def keys(self, m: MapNode, allowed: Sequence[str], what: str, extra: str = "") -> None:
        """Report keys not in `allowed`; W&B-only keys (`metric`, `project`...) of a group are one note."""
        wandb = [e for k, e in m.entries.items() if k in WANDB_ONLY_KEYS and what == "group"]
        if wandb:
            self.note(wandb[0], wandb_only_note([str(e.key) for e in wandb]), key=True)
        for key, e in m.entries.items():
            if key in allowed or (key in WANDB_ONLY_KEYS and what == "group"):
                continue
            self.at(
                e,
                f"unknown key {str(key)!r}",
                unknown_key_hint(key, allowed, f"{what} keys are: {', '.join(allowed)}{extra}"),
                key=True,
            )

    def mapping(self, node: Node, what: str) -> MapNode | None:
        if isinstance(node, MapNode):
            return node
        self.at(node, f"expected {what}, got {describe(node)}")
        return None

    def string(self, node: Node, what: str = "a string") -> str | None:
        if isinstance(node, ScalarNode) and isinstance(node.value, str):
            return node.value
        self.at(node, f"expected {what}, got {describe(node)}")
        return None

    def integer(self, node: Node, minimum: int | None = None) -> int | None:
        if not (isinstance(node, ScalarNode) and isinstance(node.value, int) and not isinstance(node.value, bool)):
            self.at(node, f"expected a whole number{'' if minimum is None else f' >= {minimum}'}, got {describe(node)}")
            return None
        if minimum is not None and node.value < minimum:
            self.at(node, f"must be >= {minimum}, got {node.value}")
            return None
        return node.value

    def number(self, node: Node) -> float | None:
        if not (isinstance(node, ScalarNode) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool) and math.isfinite(node.value)):
            self.at(node, f"expected a number, got {describe(node)}")
            return None
        return node.value

    def boolean(self, node: Node) -> bool | None:
        if isinstance(node, ScalarNode) and isinstance(node.value, bool):
            return node.value
        self.at(node, f"expected true or false, got {describe(node)}")
        return None

    def duration(self, node: Node) -> float | None:
        v = node.value if isinstance(node, ScalarNode) else None
        if not isinstance(node, ScalarNode):
            self.at(node, f"expected a duration such as 8h, got {describe(node)}", units.DURATION_HINT)
            return None
        try:
            return units.parse_duration_s(v)
        except ValueError as exc:
            self.at(node, f"bad duration: {exc}", units.DURATION_HINT)
            return None

    def run_time(self, node: Node) -> float | None:
        """A run's `duration` or `timeout`: a bare number is refused (8 seconds or 8 hours?), as a
        bare memory quantity is."""
        if isinstance(node, ScalarNode) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool) and node.value > 0:
            self.at(node, f"bad duration: {node.value!r} has no unit", f"{units.DURATION_HINT} (a bare number could be seconds or hours)")
            return None
        return self.duration(node)

    def memory(self, node: Node) -> int | None:
        if not isinstance(node, ScalarNode):
            self.at(node, f"expected a memory quantity such as 2.5GiB, got {describe(node)}", units.MEMORY_HINT)
            return None
        try:
            return units.parse_memory_mib(node.value)
        except ValueError as exc:
            self.at(node, f"bad memory quantity: {exc}", units.MEMORY_HINT)
            return None

    def env(self, node: Node) -> dict[str, tuple[str, Node]] | None:
        """`{NAME: value}`; numbers become their text as written; booleans must be quoted."""
        m = self.mapping(node, "a mapping of environment variables (NAME: value)")
        if m is None:
            return None
        out: dict[str, tuple[str, Node]] = {}
        for key, e in m.entries.items():
            if not isinstance(key, str) or not ENV_NAME_RE.fullmatch(key):
                self.at(e, f"{str(key)!r} is not an environment variable name", "use letters, digits and _", key=True)
                continue
            v = e.value
            if isinstance(v, ScalarNode) and isinstance(v.value, str):
                out[key] = (v.value, v)
            elif isinstance(v, ScalarNode) and isinstance(v.value, (int, float)) and not isinstance(v.value, bool):
                out[key] = (v.raw, v)
            else:
                hint = "quote it, e.g. 'true'" if isinstance(v, ScalarNode) and isinstance(v.value, bool) else None
                self.at(v, f"expected a string, got {describe(v)}", hint)
        return out

    # -- declared keys ------------------------------------------------------------------------
    def require(self, m: MapNode, k: Key) -> None:
        """A declared required key is absent from `m`."""
        self.missing(m, k.name, f"missing `{k.name}`", k.missing)

    def read_keys(self, m: MapNode, scope: str, names: Sequence[str] | None = None) -> Values:
        """The declared keys of `scope` that the declaration alone reads (`schema.READ_KINDS`), or
        those of `names` in that order: each value checked for its type, range and choices; a key
        absent (or null) takes its declared default, and so does a wrong one (reported, and named
        in `Values.bad`)."""
        out = Values()
        keys = keys_of(scope) if names is None else [declared(scope, n) for n in names]
        for k in keys:
            if k.kind not in READ_KINDS or k.alias_of is not None:
                continue
            node = self._given(m, k, out)
            if node is None:
                if k.required and m.get(k.name) is None:
                    self.require(m, k)
                    out.bad.add(k.name)
                out[k.name] = k.default
                continue
            v = _READERS[k.kind](self, node, k)
            if v is None:
                out.bad.add(k.name)
            out[k.name] = k.default if v is None else v
        return out

    def _given(self, m: MapNode, k: Key, out: Values) -> Node | None:
        """The node of `k` or of its other name (`run_cap` for `count`); None when absent or when
        both are given (reported)."""
        names = [k.name] + [a.name for a in keys_of(k.scope) if a.alias_of == k.name]
        given = [m.entries[n] for n in names if m.get(n) is not None]
        if len(given) > 1:
            self.at(given[1], f"`{given[1].key}` is another name for `{k.name}`; give only one", key=True)
            out.bad.add(k.name)
            return None
        return given[0].value if given else None

    def declared_number(self, node: Node, k: Key) -> float | None:
        """A number in the declared range; out of it: `must be >= 0` or `compute must be in (0, 1]`."""
        v = self.number(node)
        if v is None:
            return None
        if k.in_range(v):
            return float(v)
        if k.maximum is None:
            self.at(node, f"must be >= {k.minimum}, got {v}", k.hint)
        else:
            lo = "(" if k.exclusive_minimum else "["
            self.at(node, f"{k.name} must be in {lo}{k.minimum}, {k.maximum}], got {v}", k.hint)
        return None

    def choice(self, node: Node, k: Key) -> str | None:
        """One of the declared choices; a value refused for a reason of its own says it."""
        s = self.string(node, k.what or "a string")
        if s is None:
            return None
        for value, message, hint in k.refused:
            if s == value:
                self.at(node, message, hint)
                return None
        if s not in k.choices:
            self.at(node, f"unknown {k.name} {s!r}; expected {' or '.join(k.choices)}", k.hint)
            return None
        return s

    def wait(self, node: Node) -> float | None:
        """`backoff` and `stop_grace`: a duration that may be zero (`0`, `0s`, `0h 0m`)."""
        if isinstance(node, ScalarNode) and (ZERO_WAIT_RE.fullmatch(str(node.value)) or _ZERO_DURATION.match(str(node.value))):
            return 0.0
        return self.duration(node)


_ZERO_DURATION = re.compile(units.ZERO_DURATION_PATTERN)


class Values(dict[str, Any]):
    """The declared keys of a section as read; `bad` names those given with a wrong value."""

    def __init__(self) -> None:
        super().__init__()
        self.bad: set[str] = set()

    def add(self, more: Values) -> None:
        """Take in the keys read by another `Ctx.read_keys` call of the same section."""
        self.update(more)
        self.bad |= more.bad


_READERS: dict[str, Callable[[Ctx, Node, Key], Any]] = {
    "integer": lambda c, n, k: c.integer(n, None if k.minimum is None else int(k.minimum)),
    "number": Ctx.declared_number,
    "string": lambda c, n, k: c.string(n, k.what or "a string"),
    "boolean": lambda c, n, k: c.boolean(n),
    "choice": Ctx.choice,
    "duration": lambda c, n, k: c.duration(n),
    "run_time": lambda c, n, k: c.run_time(n),
    "wait": lambda c, n, k: c.wait(n),
    "env": lambda c, n, k: c.env(n),
}
