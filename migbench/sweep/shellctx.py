"""Where each value lands in a `shell: true` command, and how it is quoted there.

`shlex.quote` makes a value one literal word only where the shell reads it bare: inside double
quotes its single quotes are literal and a `$(...)` in the value runs. So the template (its
literal text; `{param}`s and value macros are opaque words) is read once as `/bin/sh` reads it,
and each place a value goes is given a context:

| context | example | what is inserted |
|---|---|---|
| `bare` (also inside `$(...)`) | `echo {a}`, `x=$(f {a})` | `shlex.quote(v)` |
| `single` | `echo 'a={a}'` | `'` + `shlex.quote(v)` + `'`: the single quote is closed around the quoted value |
| `double` | `echo "a={a}"` | `"` + `shlex.quote(v)` + `"`: the double quote is closed around the single-quoted value |
| `comment` | `run.sh  # {a}` | the value with its line breaks written `\\n` (a line break would end the comment) |

and the contexts no quoting can make safe are refused when the sweep is loaded, with a hint:
inside backticks (the shell finds the closing backtick before it reads quotes, and undoes
backslashes), right after a backslash (it would escape the quote migbench opens), in a here-document's
body (quotes are literal there; a line of the value could end the document), inside `${...}` and
`$((...))`.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

BARE, SINGLE, DOUBLE, COMMENT = "bare", "single", "double", "comment"
REFUSED = {
    "backtick": "inside backticks `...`: the shell ends them at the first backtick, whatever the quoting",
    "escaped": "right after a backslash, which would escape the quote migbench puts around the value",
    "heredoc": "in a here-document's body, where quotes are literal and a line of the value could end the document",
    "parameter": "inside ${...}, where quoting rules differ between shells",
    "arithmetic": "inside $((...)), where the value would be evaluated as arithmetic",
}
REFUSED_HINT = 'move the value out of it (e.g. write $(...) instead of backticks, or assign it first: v={name}; then use "$v")'

_OPS = set(" \t\n;&|()<>")


def contexts(literals: Sequence[str | None]) -> list[str]:
    """The context of each value slot in a template given as its pieces in order: literal text, or
    None for a value slot. Returns one context per None."""
    stack: list[list[object]] = [[BARE, 0]]  # frames: [mode, paren depth (for $(...))]
    out: list[str] = []
    esc = False
    word_start = True
    heredocs: list[tuple[str, bool]] = []  # delimiters waiting for the next line: (word, strip tabs)
    doc: tuple[str, bool] | None = None  # inside a here-document body
    line = ""  # the current line of a here-document body
    want_word: bool | None = None  # after `<<`: reading its delimiter (the flag: `<<-`)
    word = ""

    for piece in literals:
        mode = str(stack[-1][0])
        if piece is None:
            if doc is not None:
                out.append("heredoc")
                line += "\x00"
            elif esc and mode != SINGLE:
                out.append("escaped")
            elif mode in (BARE, "cmdsub"):
                out.append(BARE)
            else:
                out.append({"bq": "backtick", "param": "parameter", "arith": "arithmetic"}.get(mode, mode))
            esc = False
            word_start = False
            if want_word is not None:
                word += "\x00"
            continue
        i = 0
        while i < len(piece):
            c = piece[i]
            mode = str(stack[-1][0])
            if doc is not None:  # a here-document body, line by line
                if c == "\n":
                    text = line.lstrip("\t") if doc[1] else line
                    if text == doc[0]:
                        doc = heredocs.pop(0) if heredocs else None
                    line = ""
                else:
                    line += c
                i += 1
                continue
            if want_word is not None and mode in (BARE, "cmdsub"):
                if c in " \t" and not word:
                    i += 1
                    continue
                if c in _OPS and not esc:
                    heredocs.append(_delimiter(word, want_word))
                    want_word, word = None, ""
                    continue  # the operator is read below
                word += c
                esc = c == "\\" and not esc
                i += 1
                continue
            if mode == COMMENT:
                if c == "\n":
                    stack.pop()  # the line break itself is read as bare text below
                    continue
                i += 1
                continue
            if esc:
                esc = False
                word_start = False
                i += 1
                continue
            if mode == SINGLE:
                if c == "'":
                    stack.pop()
                i += 1
                continue
            if c == "\\":
                esc = True
                i += 1
                continue
            nxt = piece[i + 1] if i + 1 < len(piece) else ""
            if mode == "bq" and c == "`":
                stack.pop()
                i += 1
                continue
            if mode == "param" and c == "}":
                stack.pop()
                i += 1
                continue
            if mode == DOUBLE and c == '"':
                stack.pop()
                i += 1
                continue
            if c == "$" and nxt == "(" and piece[i + 2 : i + 3] == "(":
                stack.append(["arith", 0])
                i += 3
                continue
            if c == "$" and nxt == "(":
                stack.append(["cmdsub", 1])
                word_start = True
                i += 2
                continue
            if c == "$" and nxt == "{":
                stack.append(["param", 0])
                i += 2
                continue
            if c == "`":
                stack.append(["bq", 0])
                i += 1
                continue
            if mode == "arith":
                if c == "(":
                    stack[-1][1] = int(str(stack[-1][1])) + 1
                elif c == ")":
                    if int(str(stack[-1][1])) == 0 and nxt == ")":
                        stack.pop()
                        i += 2
                        continue
                    stack[-1][1] = int(str(stack[-1][1])) - 1
                i += 1
                continue
            if mode in (DOUBLE, "bq", "param"):
                if c == '"' and mode != DOUBLE:
                    stack.append([DOUBLE, 0])
                elif c == "'" and mode != DOUBLE:
                    stack.append([SINGLE, 0])
                i += 1
                continue
            # BARE or cmdsub
            if c == "'":
                stack.append([SINGLE, 0])
            elif c == '"':
                stack.append([DOUBLE, 0])
            elif c == "#" and word_start:
                stack.append([COMMENT, 0])
            elif mode == "cmdsub" and c == "(":
                stack[-1][1] = int(str(stack[-1][1])) + 1
            elif mode == "cmdsub" and c == ")":
                stack[-1][1] = int(str(stack[-1][1])) - 1
                if int(str(stack[-1][1])) == 0:
                    stack.pop()
            elif c == "<" and nxt == "<":
                i += 2
                if i < len(piece) and piece[i] == "-":
                    want_word = True
                    i += 1
                else:
                    want_word = False
                word_start = True
                continue
            elif c == "\n" and heredocs:
                doc = heredocs.pop(0)
                line = ""
            word_start = c in _OPS
            i += 1
    return out


def _delimiter(word: str, strip_tabs: bool) -> tuple[str, bool]:
    """A here-document's delimiter as its closing line reads (quotes removed)."""
    return word.replace("'", "").replace('"', "").replace("\\", ""), strip_tabs


def quote(value: str, context: str) -> str:
    """`value` as the text to insert at a slot of `context` (one of BARE, SINGLE, DOUBLE, COMMENT)."""
    if context == DOUBLE:
        return '"' + shlex.quote(value) + '"'
    if context == SINGLE:
        return "'" + shlex.quote(value) + "'"
    if context == COMMENT:
        return value.replace("\r", "\\r").replace("\n", "\\n")
    return shlex.quote(value)
