"""Command templates: `{param}` placeholders, `{{`/`}}` escapes and `${macro}`s, rendered into argv.

No value ever reaches a shell unless the group says `shell: true`: a string command is split with
`shlex.split` before substitution, so each value lands inside exactly one argv element.
"""

from __future__ import annotations

import datetime as _dt
import re
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Union

import yaml

from migbench.sweep import shellctx
from migbench.sweep.fields import Ctx
from migbench.sweep.model import canonical_json, render_value
from migbench.sweep.schema import ALL_MACROS, LIST_MACROS
from migbench.sweep.yamlnodes import MapNode, Node, ScalarNode, SeqNode, describe

# Templates: {param}, {{ }}, ${macro}


@dataclass(frozen=True)
class Lit:
    text: str


@dataclass(frozen=True)
class Placeholder:
    name: str


@dataclass(frozen=True)
class Macro:
    name: str
    text: str  # as written, e.g. "${run_id}"


Part = Union[Lit, Placeholder, Macro]
_PH_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_.\-]*)\}")


def _flush(parts: list[Part], buf: list[str]) -> None:
    """The literal text gathered in `buf` becomes one part."""
    if buf:
        parts.append(Lit("".join(buf)))
        buf.clear()


def _macro(text: str, i: int, shell: bool, parts: list[Part], buf: list[str], errors: list[tuple[str, str | None]]) -> int | None:
    """The `${...}` at `text[i]`: a macro part, a shell variable kept as text, or an error; where the
    scan goes on, or None when the rest of the text is taken (an unclosed `${`)."""
    j = text.find("}", i + 2)
    if j < 0:
        if shell:
            buf.append(text[i:])
        else:
            errors.append((f"unclosed '${{' in {text!r}", "write ${name} for a macro"))
        return None
    name = text[i + 2 : j]
    written = text[i : j + 1]
    if name in ALL_MACROS:
        _flush(parts, buf)
        parts.append(Macro(name, written))
    elif name == "args_json_file":
        errors.append(("${args_json_file} is not supported", "use ${args_json}, ${args} or {param} placeholders instead"))
    elif shell:
        buf.append(written)  # a shell variable: the shell expands it
    else:
        errors.append(
            (
                f"unknown macro {written}",
                "macros are ${" + "}, ${".join(ALL_MACROS) + "}; without shell: true no environment variable is expanded",
            )
        )
    return j + 1


def parse_template(text: str, shell: bool) -> tuple[list[Part], list[tuple[str, str | None]]]:
    """Split a template into literals, `{param}` placeholders and `${macro}`s; (parts, errors)."""
    parts: list[Part] = []
    errors: list[tuple[str, str | None]] = []
    buf: list[str] = []
    brace_hint = "write {{ and }} for literal braces; {name} is a parameter placeholder"

    def flush() -> None:
        _flush(parts, buf)

    def brace_error(message: str) -> None:
        if not any(m.startswith("a lone") for m, _ in errors):
            errors.append((message, brace_hint))

    i, n = 0, len(text)
    while i < n:
        if text.startswith("{{", i):
            buf.append("{")
            i += 2
        elif text.startswith("}}", i):
            buf.append("}")
            i += 2
        elif text.startswith("${", i):
            end = _macro(text, i, shell, parts, buf, errors)
            if end is None:
                break
            i = end
        elif text[i] == "{":
            m = _PH_RE.match(text, i)
            if m:
                flush()
                parts.append(Placeholder(m.group(1)))
                i = m.end()
            else:
                brace_error(f"a lone '{{' in {text!r}")
                buf.append("{")
                i += 1
        elif text[i] == "}":
            brace_error(f"a lone '}}' in {text!r}")
            buf.append("}")
            i += 1
        else:
            buf.append(text[i])
            i += 1
    flush()
    return parts, errors


def check_names(ctx: Ctx, node: Node, parts: list[Part], names: Sequence[str]) -> bool:
    ok = True
    for p in parts:
        if isinstance(p, Placeholder) and p.name != "repeat" and p.name not in names:
            known = f"parameters are: {', '.join(names)}" if names else "the group has no parameters"
            ctx.at(
                node,
                f"placeholder {{{p.name}}} names no parameter; {known}",
                "{repeat} is the repeat index; write {{ and }} for literal braces",
            )
            ok = False
    return ok


def fill(parts: list[Part], values: dict[str, Any], macro: Callable[[Macro], str]) -> str:
    out = []
    for p in parts:
        if isinstance(p, Lit):
            out.append(p.text)
        elif isinstance(p, Placeholder):
            out.append(render_value(values[p.name]))
        else:
            out.append(macro(p))
    return "".join(out)


VALUE_MACROS = ("program", "args_json", *LIST_MACROS)
"""Macros whose text comes from the sweep's values (quoted in a shell command as a `{param}` is)."""


def shell_slots(parts: list[Part]) -> list[str]:
    """The quoting context (`shellctx`) of each value slot of a shell command, in order: each
    `{param}` and value macro."""
    pieces: list[str | None] = []
    for p in parts:
        if isinstance(p, Lit):
            pieces.append(p.text)
        elif isinstance(p, Placeholder) or p.name in VALUE_MACROS:
            pieces.append(None)
        else:
            pieces.append(p.text if p.name not in ("env", "interpreter") else {"env": "/usr/bin/env", "interpreter": "python"}[p.name])
    return shellctx.contexts(pieces)


# ---- command -----------------------------------------------------------------------------------


@dataclass
class Command:
    written: str | tuple[str, ...]
    shell: bool
    tokens: list[list[Part]]  # non-shell: one parts list per argv element; shell: one list
    program: str | None

    def _macro(self, m: Macro, params: dict[str, Any], quote: bool, q: Callable[[str], str] = shlex.quote) -> str:
        if not quote:
            q = str
        if m.name == "program":
            return q(self.program or "")
        if m.name == "env":
            return "/usr/bin/env"
        if m.name == "interpreter":
            return "python"
        if m.name == "args_json":
            return q(canonical_json(params))
        if m.name in LIST_MACROS:  # only in shell mode; non-shell expands whole tokens
            return " ".join(q(a) for a in _list_macro(m.name, params))
        return m.text  # launch-time macro

    def render(self, values: dict[str, Any], params: dict[str, Any]) -> tuple[str, ...]:
        if self.shell:  # each value quoted for where it lands (shellctx)
            slots = iter(shell_slots(self.tokens[0]))
            out: list[str] = []
            for p in self.tokens[0]:
                if isinstance(p, Lit):
                    out.append(p.text)
                elif isinstance(p, Placeholder):
                    out.append(shellctx.quote(render_value(values[p.name]), next(slots)))
                elif p.name in VALUE_MACROS:
                    where = next(slots)
                    out.append(self._macro(p, params, True, lambda s, where=where: shellctx.quote(s, where)))  # type: ignore[misc]
                else:
                    out.append(self._macro(p, params, True))
            return ("/bin/sh", "-c", "".join(out))
        argv: list[str] = []
        for parts in self.tokens:
            if len(parts) == 1 and isinstance(parts[0], Macro) and parts[0].name in LIST_MACROS:
                argv.extend(_list_macro(parts[0].name, params))
            else:
                argv.append(fill(parts, values, lambda m: self._macro(m, params, False)))
        return tuple(argv)


def _list_macro(name: str, params: dict[str, Any]) -> list[str]:
    out = []
    for k in sorted(params):
        v = params[k]
        if name == "args":
            out.append(f"--{k}={render_value(v)}")
        elif name == "args_no_hyphens":
            out.append(f"{k}={hydra_value(v)}")
        elif v is True:  # args_no_boolean_flags
            out.append(f"--{k}")
        elif v is not False:
            out.append(f"--{k}={render_value(v)}")
    return out


_HYDRA_PLAIN = re.compile(r"[A-Za-z0-9_\-+./@%~*?|]+")


def hydra_value(value: Any) -> str:
    """A value as a Hydra override's right-hand side (`${args_no_hyphens}`): a string Hydra would not
    read back as that same string (a comma, brackets, quotes, spaces, `=`, `:`; or text that reads as
    a number, a bool or null, such as `'1'`) keeps Hydra's quoting, so `'/data/a,b'` stays one value."""
    text = render_value(value)
    if not isinstance(value, str) or (_HYDRA_PLAIN.fullmatch(text) and isinstance(yaml.safe_load(text), str)):
        return text
    if "'" not in text:
        quote = "'"
    elif '"' not in text:
        quote = '"'
    else:
        quote, text = "'", text.replace("'", "\\'")
    return quote + re.sub(r"(\\+)$", lambda m: m.group(1) * 2, text) + quote


WANDB_DEFAULT_COMMAND = ("${env}", "${interpreter}", "${program}", "${args}")
"""What runs for a group with `program:` and no `command:`, as in W&B."""


def _command_tokens(ctx: Ctx, node: Node, shell: bool) -> tuple[list[tuple[Node, str]], str | tuple[str, ...]] | None:
    """The command's arguments (each with its node) and the command as written; None (reported) when unusable."""
    tokens: list[tuple[Node, str]] = []
    written: str | tuple[str, ...]
    if isinstance(node, ScalarNode) and isinstance(node.value, str):
        written = node.value
        if not written.strip():
            ctx.at(node, "the command is empty")
            return None
        if shell:
            tokens = [(node, written)]
        else:
            try:
                tokens = [(node, t) for t in shlex.split(written)]
            except ValueError as exc:
                ctx.at(
                    node,
                    f"cannot split the command into arguments: {exc}",
                    "close the quote, or write the command as a list of arguments",
                )
                return None
    elif isinstance(node, SeqNode):
        if shell:
            ctx.at(node, "with shell: true the command must be one string", 'write command: "a | b" as a string')
            return None
        if not node.items:
            ctx.at(node, "the command is empty")
            return None
        for item in node.items:
            if isinstance(item, ScalarNode) and isinstance(item.value, str):
                tokens.append((item, item.value))
            elif isinstance(item, ScalarNode) and item.value is not None and not isinstance(item.value, (_dt.date, bool)):
                tokens.append((item, item.raw))  # a number: the text as written
            else:
                ctx.at(item, f"expected a string argument, got {describe(item)}", "quote it")
        written = tuple(t for _, t in tokens)
    else:
        ctx.at(node, f"expected a string or a list of strings, got {describe(node)}")
        return None
    return tokens, written


def _token_ok(ctx: Ctx, tnode: Node, parts: list[Part], shell: bool, program: str | None) -> bool:
    """The macros and placeholders of one argument fit where they stand; False (reported) when not."""
    ok = True
    for p in parts:
        if isinstance(p, Macro) and p.name == "program" and program is None:
            ctx.at(tnode, "${program} is used but the group has no `program`", "add program: train.py")
            ok = False
        if isinstance(p, Macro) and p.name in LIST_MACROS and not shell and len(parts) != 1:
            ctx.at(
                tnode,
                f"{p.text} expands to several arguments, so it must stand alone as one argument",
                "give it its own argument, e.g. python train.py ${args}",
            )
            ok = False
    if shell:
        slots = [p for p in parts if isinstance(p, Placeholder) or (isinstance(p, Macro) and p.name in VALUE_MACROS)]
        for p, where in zip(slots, shell_slots(parts)):
            if where in shellctx.REFUSED:
                name = "{" + p.name + "}" if isinstance(p, Placeholder) else p.text
                ctx.at(tnode, f"{name} is placed {shellctx.REFUSED[where]}: no quoting makes a value safe there", shellctx.REFUSED_HINT.replace("{name}", name))
                ok = False
    return ok


def parse_command(ctx: Ctx, g: MapNode, shell: bool, program: str | None, pnames: list[str] | None) -> Command | None:
    node = g.get("command")
    if node is None and program is not None and not shell:
        node = SeqNode(g.line, f"{g.path}.command" if g.path else "command", [ScalarNode(g.line, g.path, t, t) for t in WANDB_DEFAULT_COMMAND])
    if node is None:
        ctx.missing(g, "command", "missing `command`", "e.g. command: python train.py --lr {lr}   (or a list of arguments)")
        return None
    got = _command_tokens(ctx, node, shell)
    if got is None:
        return None
    tokens, written = got
    compiled: list[list[Part]] = []
    ok = True
    for tnode, text in tokens:
        parts, errors = parse_template(text, shell)
        for msg, hint in errors:
            ctx.at(tnode, msg, hint)
            ok = False
        if not _token_ok(ctx, tnode, parts, shell, program):
            ok = False
        if pnames is not None and not check_names(ctx, tnode, parts, pnames):
            ok = False
        compiled.append(parts)
    if not ok or pnames is None:
        return None
    return Command(written, shell, compiled, program)


def used_names(parts_lists: list[list[Part]]) -> tuple[set[str], bool]:
    """The parameter names the templates use, and whether a macro passes all of them (`${args}`...)."""
    names: set[str] = set()
    every = False
    for parts in parts_lists:
        for p in parts:
            if isinstance(p, Placeholder):
                names.add(p.name)
            elif isinstance(p, Macro) and (p.name in LIST_MACROS or p.name == "args_json"):
                every = True
    return names, every
