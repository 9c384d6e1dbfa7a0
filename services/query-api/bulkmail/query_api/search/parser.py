"""Query text → typed syntax tree (``ast.Query``), or a positioned ``QueryError``.

lark parses (LALR, positions kept); this module turns lark's tree into our nodes, pulls the
directives (`sort:`, `limit:`, `slice:`) out of the filter and enforces the caps. Field names are
not checked here: which fields exist depends on the organisation (custom fields), so the
compiler does that, still before anything reaches the database.
"""

from __future__ import annotations

import re
from functools import cache, lru_cache
from importlib import resources

import lark
from lark import Token, Tree

from bulkmail.query_api.search import ast
from bulkmail.query_api.search.errors import MAX_DEPTH, MAX_IN_LIST, MAX_QUERY_LENGTH, MAX_TERMS, QueryError

DIRECTIVES = ("sort", "limit", "slice")
MAX_LIMIT = 10_000_000
MAX_SLICES = 10_000

# lark's terminal names, as a user would say them.
_TERMINAL_WORDS = {
    "WORD": "a word",
    "STRING": 'a "quoted phrase"',
    "REL_DATE": 'a relative date such as "3 days ago"',
    "BRACKETED": "a [bracketed] value",
    "STAR": '"*"',
    "OP": "a comparison (: = < > <= >=)",
    "IN": '"in (...)"',
    "NESTED": "a nested clause such as contact(...)",
    "NOT": '"not"',
    "_AND": '"and"',
    "_OR": '"or"',
    "LPAR": '"("',
    "RPAR": '")"',
    "COMMA": '","',
    "$END": "the end of the query",
}
_WORD_ORDER = list(_TERMINAL_WORDS.values())


@cache
def _lark() -> lark.Lark:
    grammar = resources.files("bulkmail.query_api.search").joinpath("grammar.lark").read_text()
    return lark.Lark(grammar, parser="lalr", lexer="contextual", propagate_positions=True, maybe_placeholders=False)


# Queries repeat (a search box pages through one, Smart Views run again and again) and the tree is
# immutable: parsing costs ~0.3 ms of a search page's ~3 ms of Python, a cached parse nothing.
PARSE_CACHE_SIZE = 512


@lru_cache(maxsize=PARSE_CACHE_SIZE)
def parse_query(text: str) -> ast.Query:
    """Parse a search query; raises ``QueryError`` (and nothing else) when it is not valid."""
    if len(text) > MAX_QUERY_LENGTH:
        raise QueryError(
            f"the query is {len(text)} characters long; the limit is {MAX_QUERY_LENGTH}",
            query=text,
            offset=MAX_QUERY_LENGTH,
            kind="query_too_long",
        )
    try:
        tree = _lark().parse(text)
    except lark.exceptions.UnexpectedInput as exc:
        raise _syntax_error(text, exc) from None
    except lark.exceptions.LarkError as exc:  # pragma: no cover - lark's own internal errors
        raise QueryError(f"the query could not be read: {exc}", query=text, offset=0) from None
    _check_size(text, tree)
    node = _Builder(text).node(tree.children[0]) if tree.children else None
    return _split_directives(text, node)


def _syntax_error(text: str, exc: lark.exceptions.UnexpectedInput) -> QueryError:
    expected: set[str] = set()
    if isinstance(exc, lark.exceptions.UnexpectedToken):
        token = exc.token
        expected = set(exc.expected)
        if token.type == "$END":
            offset, detail = len(text), "the query ends too early"
        else:
            offset = token.start_pos or 0
            detail = f"unexpected {_describe(token)}"
    elif isinstance(exc, lark.exceptions.UnexpectedCharacters):
        offset = exc.pos_in_stream or 0
        expected = set(exc.allowed or ())
        char = text[offset] if offset < len(text) else ""
        if char == '"':
            detail = "this quote is never closed"
        elif char == "[":
            detail = "this [ is never closed"
        else:
            detail = f"unexpected character {char!r}"
    elif isinstance(exc, lark.exceptions.UnexpectedEOF):
        offset, detail = len(text), "the query ends too early"
        expected = set(exc.expected)
    else:  # pragma: no cover - the three above are all lark raises
        offset, detail = 0, "the query could not be read"
    words = {_TERMINAL_WORDS.get(name, name.lower()) for name in expected}
    return QueryError(detail, query=text, offset=offset, expected=_ordered(words), kind="syntax_error")


def _describe(token: Token) -> str:
    if token.type in ("LPAR", "RPAR", "COMMA", "OP", "STAR"):
        return f'"{token.value}"'
    if token.type in ("NOT", "_AND", "_OR", "IN"):
        return f'keyword "{token.value}"'
    return f"{_TERMINAL_WORDS.get(token.type, 'text')} {token.value!r}"


def _ordered(words: set[str]) -> list[str]:
    return sorted(words, key=lambda w: (_WORD_ORDER.index(w) if w in _WORD_ORDER else 99, w))


def _check_size(text: str, tree: Tree[Token]) -> None:
    """Depth and term caps, measured without recursion (lark's trees can be deep)."""
    terms = 0
    stack: list[tuple[Tree[Token], int]] = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        if node.data in ("or_expr", "and_expr", "not_expr", "nested"):
            depth += 1
            if depth > MAX_DEPTH:
                raise QueryError(
                    f"the query nests more than {MAX_DEPTH} levels deep",
                    query=text,
                    offset=_offset(node),
                    kind="query_too_deep",
                )
        if node.data in ("clause", "in_list", "nested", "text", "everything"):
            terms += 1
            if terms > MAX_TERMS:
                raise QueryError(
                    f"the query has more than {MAX_TERMS} terms",
                    query=text,
                    offset=_offset(node),
                    kind="query_too_large",
                )
        if node.data == "in_list":
            values = [c for c in node.children[1:] if isinstance(c, Token) and c.type != "IN"]
            if len(values) > MAX_IN_LIST:
                raise QueryError(
                    f"an in (...) list holds at most {MAX_IN_LIST} values; this one has {len(values)}",
                    query=text,
                    offset=_offset(node),
                    kind="list_too_long",
                )
        stack.extend((child, depth) for child in node.children if isinstance(child, Tree))


def _offset(node: Tree[Token] | Token) -> int:
    if isinstance(node, Token):
        return node.start_pos or 0
    meta = node.meta
    return 0 if meta.empty else meta.start_pos


def unquote(token_text: str) -> str:
    r"""The text inside a "quoted string", with \" and \\ escapes undone."""
    return re.sub(r"\\(.)", r"\1", token_text[1:-1], flags=re.S)


class _Builder:
    def __init__(self, text: str) -> None:
        self.text = text

    def node(self, tree: Tree[Token] | Token) -> ast.Node:
        if isinstance(tree, Token):  # pragma: no cover - the grammar wraps every token
            raise QueryError("unexpected token", query=self.text, offset=_offset(tree))
        offset = _offset(tree)
        kind = tree.data
        children = tree.children
        if kind == "or_expr":
            return ast.Or(tuple(self.node(c) for c in children), offset)
        if kind == "and_expr":
            return ast.And(tuple(self.node(c) for c in children), offset)
        if kind == "not_expr":
            return ast.Not(self.node(children[1]), offset)
        if kind == "everything":
            return ast.Everything(offset)
        if kind == "text":
            return ast.Text(self.value(children[0]), offset)
        if kind == "nested":
            opener = children[0]
            assert isinstance(opener, Token)
            body = self.node(children[1]) if len(children) > 1 else None
            return ast.Nested(str(opener)[:-1].lower(), body, offset)
        if kind == "clause":
            field, op, *values = children
            assert isinstance(op, Token)
            name = self.field(field)
            parsed = tuple(self.value(v) for v in values)
            if name.lower() == "in" and op == ":":
                return self.smart_view(parsed, offset)
            return ast.Clause(name, str(op), parsed, offset)
        if kind == "in_list":
            field, _in, *values = children
            return ast.InList(self.field(field), tuple(self.value(v) for v in values), offset)
        raise AssertionError(f"unknown grammar rule {kind}")  # pragma: no cover

    def field(self, tree: Tree[Token] | Token) -> str:
        assert isinstance(tree, Tree)
        token = tree.children[0]
        assert isinstance(token, Token)
        return unquote(str(token)) if token.type == "STRING" else str(token)

    def value(self, token: Tree[Token] | Token) -> ast.Value:
        assert isinstance(token, Token)
        offset = token.start_pos or 0
        raw = str(token)
        if token.type == "STRING":
            return ast.Value(unquote(raw), ast.ValueKind.phrase, offset)
        if token.type == "BRACKETED":
            return ast.Value(raw[1:-1].strip(), ast.ValueKind.bracketed, offset)
        if token.type == "REL_DATE":
            return ast.Value(" ".join(raw.split()), ast.ValueKind.relative_date, offset)
        if token.type == "STAR":
            return ast.Value("*", ast.ValueKind.star, offset)
        return ast.Value(raw, ast.ValueKind.word, offset)

    def smart_view(self, values: tuple[ast.Value, ...], offset: int) -> ast.SmartView:
        if len(values) != 1 or not values[0].is_text:
            raise QueryError(
                'in: takes the name of one Smart View, e.g. in:"My Smart View"',
                query=self.text,
                offset=values[0].offset if values else offset,
                expected=["the name of a Smart View"],
                kind="invalid_value",
            )
        return ast.SmartView(values[0].text, offset)


def _split_directives(text: str, node: ast.Node | None) -> ast.Query:
    """Take `sort:`, `limit:` and `slice:` out of the filter; they apply to the whole query.

    They may stand in any conjunction outside `not` and nested clauses, so `a or b sort:x`
    sorts `a or b` (as in Close), but they cannot be an alternative of `or` on their own.
    """
    found: dict[str, ast.Clause] = {}
    filter_ = _pull_directives(text, node, found, top=True) if node is not None else None
    return ast.Query(
        text=text,
        filter=filter_,
        sort=_sort_keys(text, found["sort"]) if "sort" in found else (),
        limit=_limit(text, found["limit"]) if "limit" in found else None,
        slice=_slice(text, found["slice"]) if "slice" in found else None,
    )


def _is_directive(node: ast.Node) -> bool:
    return isinstance(node, ast.Clause) and node.field.lower() in DIRECTIVES


def _pull_directives(text: str, node: ast.Node, found: dict[str, ast.Clause], *, top: bool) -> ast.Node | None:
    if _is_directive(node):
        assert isinstance(node, ast.Clause)
        if not top:
            raise QueryError(
                f"{node.field.lower()}: applies to the whole query; it cannot be one side of an or",
                query=text,
                offset=node.offset,
                kind="invalid_directive",
            )
        _record_directive(text, node, found)
        return None
    if isinstance(node, ast.And):
        kept = []
        for item in node.items:
            if _is_directive(item):
                assert isinstance(item, ast.Clause)
                _record_directive(text, item, found)
            else:
                pulled = _pull_directives(text, item, found, top=False)
                assert pulled is not None
                kept.append(pulled)
        if not kept:
            if not top:
                raise QueryError(
                    "directives (sort:, limit:, slice:) cannot be one side of an or",
                    query=text,
                    offset=node.offset,
                    kind="invalid_directive",
                )
            return None
        return kept[0] if len(kept) == 1 else ast.And(tuple(kept), node.offset)
    if isinstance(node, ast.Or):
        items = []
        for item in node.items:
            pulled = _pull_directives(text, item, found, top=False)
            assert pulled is not None
            items.append(pulled)
        return ast.Or(tuple(items), node.offset)
    _refuse_nested_directives(text, [node])
    return node


def _record_directive(text: str, clause: ast.Clause, found: dict[str, ast.Clause]) -> None:
    name = clause.field.lower()
    if name in found:
        raise QueryError(f"{name}: is given twice", query=text, offset=clause.offset, kind="invalid_directive")
    if clause.op != ":":
        raise QueryError(
            f"{name} takes ':', not '{clause.op}'",
            query=text,
            offset=clause.offset,
            expected=['":"'],
            kind="invalid_directive",
        )
    found[name] = clause


def _refuse_nested_directives(text: str, roots: list[ast.Node]) -> None:
    stack: list[ast.Node] = list(roots)
    while stack:
        node = stack.pop()
        if _is_directive(node):
            assert isinstance(node, ast.Clause)
            raise QueryError(
                f"{node.field.lower()}: applies to the whole query; it cannot sit inside not or a nested clause",
                query=text,
                offset=node.offset,
                kind="invalid_directive",
            )
        if isinstance(node, ast.And | ast.Or):
            stack.extend(node.items)
        elif isinstance(node, ast.Not):
            stack.append(node.item)
        elif isinstance(node, ast.Nested) and node.body is not None:
            stack.append(node.body)


def _sort_keys(text: str, clause: ast.Clause) -> tuple[ast.SortKey, ...]:
    keys = []
    for value in clause.values:
        name = value.text.strip()
        descending = name.startswith("-")
        name = name.lstrip("-").strip()
        if not value.is_text or not name:
            raise QueryError(
                "sort: takes field names, e.g. sort:-last_called,created",
                query=text,
                offset=value.offset,
                expected=["a field name"],
                kind="invalid_directive",
            )
        keys.append(ast.SortKey(name, descending, value.offset))
    return tuple(keys)


def _limit(text: str, clause: ast.Clause) -> int:
    value = clause.value
    if len(clause.values) != 1 or not value.text.isdigit() or not 1 <= int(value.text) <= MAX_LIMIT:
        raise QueryError(
            f"limit: takes a whole number from 1 to {MAX_LIMIT:,}",
            query=text,
            offset=value.offset,
            expected=["a whole number"],
            kind="invalid_directive",
        )
    return int(value.text)


def _slice(text: str, clause: ast.Clause) -> tuple[int, int]:
    value = clause.value
    match = re.fullmatch(r"(\d{1,6})/(\d{1,6})", value.text.strip())
    if len(clause.values) == 1 and match:
        part, parts = int(match[1]), int(match[2])
        if 1 <= part <= parts <= MAX_SLICES:
            return part, parts
    raise QueryError(
        f"slice: takes i/n, part i (from 1) of n (at most {MAX_SLICES:,}) parts, e.g. slice:3/10",
        query=text,
        offset=value.offset,
        expected=["i/n such as 3/10"],
        kind="invalid_directive",
    )
