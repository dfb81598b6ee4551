"""Text -> FileSyntax with lark. Only syntax here; names are resolved in model.py.

Nothing in a grammar is ever evaluated: numbers and strings are read by lark's
lexer and converted with int()/float().
"""
from __future__ import annotations

import functools
from pathlib import Path

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError

from archgram.errors import GrammarError, Location
from archgram.grammar import syntax

_TOKEN_NAMES = {
    "NAME": "a name",
    "NUMBER": "a number",
    "INT": "an integer",
    "STRING": "a quoted string",
    "_NL": "end of line",
    "_CONT": "'|' on the next line",
    "LPAR": "'('",
    "RPAR": "')'",
    "VBAR": "'|'",
    "COLON": "':'",
    "RULE_OP": "':'",
    "EQUAL": "'='",
    "COMMA": "','",
    "AT": "'@'",
    "STAR": "'*'",
    "$END": "end of file",
}


@functools.lru_cache(maxsize=1)
def _lark() -> Lark:
    text = (Path(__file__).with_name("pcfg.lark")).read_text()
    return Lark(text, parser="lalr", propagate_positions=True, maybe_placeholders=True)


def _number(text: str) -> int | float:
    if any(c in text for c in ".eE"):
        value = float(text)
        return int(value) if value.is_integer() and "." not in text else value
    return int(text)


class _ToAst(Transformer):
    """One method per rule of pcfg.lark, as lark's docs recommend."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path

    def _loc(self, meta_or_token) -> Location:
        return Location(self.path, getattr(meta_or_token, "line", 0), getattr(meta_or_token, "column", 0))

    # values -------------------------------------------------------------
    def number(self, children):
        (tok,) = children
        return _number(str(tok))

    def string(self, children):
        return str(children[0])[1:-1]

    def symbol(self, children):
        return syntax.Symbol(str(children[0]))

    def call_value(self, children):
        name, args = children
        return syntax.CallValue(str(name), tuple(args or ()))

    def tuple_value(self, children):
        return tuple(c for c in children if c is not None)

    @v_args(meta=True)
    def option(self, meta, children):
        value, weight = children[0], (children[1] if len(children) > 1 else None)
        return syntax.Option(value, weight, self._loc(meta))

    @v_args(meta=True)
    def choice(self, meta, children):
        return syntax.Choice(list(children), self._loc(meta))

    def weight(self, children):
        return float(str(children[0]))

    # items and rules ------------------------------------------------------
    @v_args(meta=True)
    def named_arg(self, meta, children):
        name, choice = children
        return syntax.ArgSyntax(str(name), choice, self._loc(meta))

    @v_args(meta=True)
    def positional_arg(self, meta, children):
        return syntax.ArgSyntax(None, children[0], self._loc(meta))

    def arglist(self, children):
        return [c for c in children if c is not None]

    def repeat(self, children):
        return int(str(children[0]))

    @v_args(meta=True)
    def item(self, meta, children):
        name, args, repeat = children
        return syntax.ItemSyntax(str(name), args, repeat or 1, self._loc(meta))

    @v_args(meta=True)
    def alternative(self, meta, children):
        weight = children[-1] if isinstance(children[-1], float) or children[-1] is None else None
        items = [c for c in children if isinstance(c, syntax.ItemSyntax)]
        return syntax.AlternativeSyntax(items, weight, self._loc(meta))

    def alternatives(self, children):
        return list(children)

    @v_args(meta=True)
    def rule(self, meta, children):
        name, alternatives = children
        return syntax.RuleSyntax(str(name), alternatives, False, self._loc(meta))

    @v_args(meta=True)
    def extend_rule(self, meta, children):
        name, alternatives = children
        return syntax.RuleSyntax(str(name), alternatives, True, self._loc(meta))

    @v_args(meta=True)
    def param_decl(self, meta, children):
        name, choice = children
        return syntax.ParamSyntax(str(name), choice, False, self._loc(meta))

    @v_args(meta=True)
    def global_decl(self, meta, children):
        name, choice = children
        return syntax.ParamSyntax(str(name), choice, True, self._loc(meta))

    @v_args(meta=True)
    def start_decl(self, meta, children):
        return ("start", str(children[0]), self._loc(meta))

    @v_args(meta=True)
    def use_decl(self, meta, children):
        return ("use", str(children[0])[1:-1], self._loc(meta))

    @v_args(meta=True)
    def limit_decl(self, meta, children):
        name, value = children
        return ("limit", str(name), float(str(value)), self._loc(meta))

    def start(self, children):
        out = syntax.FileSyntax(self.path)
        for stmt in children:
            if isinstance(stmt, syntax.RuleSyntax):
                out.rules.append(stmt)
            elif isinstance(stmt, syntax.ParamSyntax):
                out.params.append(stmt)
            elif stmt[0] == "start":
                out.start.append(stmt[1:])
            elif stmt[0] == "use":
                out.uses.append(stmt[1:])
            elif stmt[0] == "limit":
                out.limits.append(stmt[1:])
        return out


def _excerpt(text: str, line: int, column: int) -> str:
    lines = text.splitlines()
    if not 1 <= line <= len(lines):
        return ""
    src = lines[line - 1]
    return f"    {src}\n    {' ' * (max(column, 1) - 1)}^"


def _token_name(name: str) -> str:
    """Readable name of a lark terminal; anonymous ones (e.g. '+:') by their text."""
    if name in _TOKEN_NAMES:
        return _TOKEN_NAMES[name]
    for term in _lark().terminals:
        if term.name == name and term.pattern.type == "str":
            return repr(term.pattern.value)
        if term.name == name and name.startswith("__ANON"):
            return repr(term.pattern.value.replace("\\", ""))
    return name.lower().replace("_", " ")


def _describe(exc: UnexpectedInput) -> str:
    if isinstance(exc, UnexpectedCharacters):
        return f"unexpected character {exc.char!r}"
    if isinstance(exc, UnexpectedEOF):
        return "unexpected end of file"
    if isinstance(exc, UnexpectedToken):
        tok = exc.token
        seen = "end of line" if tok.type in ("_NL", "_CONT") else (
            "end of file" if tok.type == "$END" else f"{str(tok)!r}")
        expected = sorted({_token_name(t) for t in exc.expected})
        return f"unexpected {seen}; expected {', '.join(expected[:6])}"
    return str(exc).splitlines()[0]


def _unclosed_paren(text: str, line: int, column: int) -> tuple[int, int] | None:
    """(line, column) of the last '(' still open at (line, column), ignoring comments and strings."""
    stack: list[tuple[int, int]] = []
    for ln, src in enumerate(text.splitlines(), start=1):
        in_string = False
        for col, ch in enumerate(src, start=1):
            if (ln, col) >= (line, column):
                return stack[-1] if stack else None
            if ch == '"':
                in_string = not in_string
            elif in_string:
                continue
            elif ch == "#":
                break
            elif ch == "(":
                stack.append((ln, col))
            elif ch == ")" and stack:
                stack.pop()
    return stack[-1] if stack else None


def parse_text(text: str, path: str = "<string>") -> syntax.FileSyntax:
    """Parse grammar text; raise GrammarError with file:line:col on bad syntax."""
    try:
        tree = _lark().parse(text if text.endswith("\n") else text + "\n")
    except UnexpectedInput as exc:
        line, column = exc.line, exc.column
        message = _describe(exc)
        if isinstance(exc, UnexpectedToken) and exc.token.type in ("_NL", "_CONT"):
            # Point at the end of the line that is cut short, not the next one.
            line = exc.token.line
            column = exc.token.column
        opened = _unclosed_paren(text, line, column) if isinstance(exc, UnexpectedToken) else None
        if opened and opened[0] < line:
            # Argument lists may span lines, so a missing ')' shows up lines later:
            # point at the '(' that was never closed.
            message = f"unclosed '(': expected ')' before {message.split(';')[0].removeprefix('unexpected ')} on line {line}"
            line, column = opened
        raise GrammarError(message, Location(path, line, column), _excerpt(text, line, column)) from None
    try:
        return _ToAst(path).transform(tree)
    except VisitError as exc:  # a conversion failed, e.g. a malformed number
        raise GrammarError(f"invalid value: {exc.orig_exc}", Location(path, 0, 0)) from None


def parse_file(path: str | Path) -> syntax.FileSyntax:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise GrammarError(f"cannot read grammar file: {exc.strerror}", Location(str(path), 0, 0)) from None
    return parse_text(text, str(path))


__all__ = ["Token", "parse_file", "parse_text"]
