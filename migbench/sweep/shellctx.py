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
    lx = _Lexer()
    for piece in literals:
        if piece is None:
            lx.value_slot()
            continue
        i = 0
        while i < len(piece):
            i = lx.char(piece, i)
    return lx.out


_SLOT_CONTEXT = {"bq": "backtick", "param": "parameter", "arith": "arithmetic"}


class _Lexer:
    """`contexts`' reading of the template as /bin/sh reads it: a stack of quoting modes, and the
    here-documents waiting for their bodies."""

    def __init__(self) -> None:
        self.stack: list[list[object]] = [[BARE, 0]]  # frames: [mode, paren depth (for $(...))]
        self.out: list[str] = []
        self.esc = False
        self.word_start = True
        self.heredocs: list[tuple[str, bool]] = []  # delimiters waiting for the next line: (word, strip tabs)
        self.doc: tuple[str, bool] | None = None  # inside a here-document body
        self.line = ""  # the current line of a here-document body
        self.want_word: bool | None = None  # after `<<`: reading its delimiter (the flag: `<<-`)
        self.word = ""

    def mode(self) -> str:
        return str(self.stack[-1][0])

    def value_slot(self) -> None:
        """A value goes here: its context."""
        mode = self.mode()
        if self.doc is not None:
            self.out.append("heredoc")
            self.line += "\x00"
        elif self.esc and mode != SINGLE:
            self.out.append("escaped")
        elif mode in (BARE, "cmdsub"):
            self.out.append(BARE)
        else:
            self.out.append(_SLOT_CONTEXT.get(mode, mode))
        self.esc = False
        self.word_start = False
        if self.want_word is not None:
            self.word += "\x00"

    def char(self, piece: str, i: int) -> int:
        """Read `piece[i]`; where reading goes on (the same index: the character is read again)."""
        c = piece[i]
        mode = self.mode()
        if self.doc is not None:  # a here-document body, line by line
            self._body_char(c)
            return i + 1
        if self.want_word is not None and mode in (BARE, "cmdsub"):
            return self._delimiter_char(c, i)
        if mode == COMMENT:
            if c == "\n":
                self.stack.pop()  # the line break itself is read as bare text next
                return i
            return i + 1
        if self.esc:
            self.esc = False
            self.word_start = False
            return i + 1
        if mode == SINGLE:
            if c == "'":
                self.stack.pop()
            return i + 1
        if c == "\\":
            self.esc = True
            return i + 1
        nxt = piece[i + 1] if i + 1 < len(piece) else ""
        if (mode, c) in (("bq", "`"), ("param", "}"), (DOUBLE, '"')):
            self.stack.pop()
            return i + 1
        opened = self._substitution(c, nxt, piece, i)
        if opened is not None:
            return opened
        if mode == "arith":
            return self._arith_char(c, nxt, i)
        if mode in (DOUBLE, "bq", "param"):
            if c == '"' and mode != DOUBLE:
                self.stack.append([DOUBLE, 0])
            elif c == "'" and mode != DOUBLE:
                self.stack.append([SINGLE, 0])
            return i + 1
        return self._bare_char(c, nxt, piece, i, mode)

    def _body_char(self, c: str) -> None:
        assert self.doc is not None
        if c == "\n":
            text = self.line.lstrip("\t") if self.doc[1] else self.line
            if text == self.doc[0]:
                self.doc = self.heredocs.pop(0) if self.heredocs else None
            self.line = ""
        else:
            self.line += c

    def _delimiter_char(self, c: str, i: int) -> int:
        """A character of the word after `<<`."""
        if c in " \t" and not self.word:
            return i + 1
        if c in _OPS and not self.esc:
            assert self.want_word is not None
            self.heredocs.append(_delimiter(self.word, self.want_word))
            self.want_word, self.word = None, ""
            return i  # the operator is read next
        self.word += c
        self.esc = c == "\\" and not self.esc
        return i + 1

    def _substitution(self, c: str, nxt: str, piece: str, i: int) -> int | None:
        """`$((`, `$(`, `${` or a backtick opening here: where reading goes on; None when none does."""
        if c == "$" and nxt == "(" and piece[i + 2 : i + 3] == "(":
            self.stack.append(["arith", 0])
            return i + 3
        if c == "$" and nxt == "(":
            self.stack.append(["cmdsub", 1])
            self.word_start = True
            return i + 2
        if c == "$" and nxt == "{":
            self.stack.append(["param", 0])
            return i + 2
        if c == "`":
            self.stack.append(["bq", 0])
            return i + 1
        return None

    def _arith_char(self, c: str, nxt: str, i: int) -> int:
        """A character inside `$((...))`: parentheses counted to find its end."""
        if c == "(":
            self.stack[-1][1] = int(str(self.stack[-1][1])) + 1
        elif c == ")":
            if int(str(self.stack[-1][1])) == 0 and nxt == ")":
                self.stack.pop()
                return i + 2
            self.stack[-1][1] = int(str(self.stack[-1][1])) - 1
        return i + 1

    def _bare_char(self, c: str, nxt: str, piece: str, i: int, mode: str) -> int:
        """A character read bare (or inside `$(...)`)."""
        stack = self.stack
        if c == "'":
            stack.append([SINGLE, 0])
        elif c == '"':
            stack.append([DOUBLE, 0])
        elif c == "#" and self.word_start:
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
                self.want_word = True
                i += 1
            else:
                self.want_word = False
            self.word_start = True
            return i
        elif c == "\n" and self.heredocs:
            self.doc = self.heredocs.pop(0)
            self.line = ""
        self.word_start = c in _OPS
        return i + 1


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
