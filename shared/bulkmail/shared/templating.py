"""Email template rendering: Close's template tags in a Jinja2 sandbox.

A template (subject, HTML body, optional plain-text body) is compiled once into a
`CompiledTemplate` and rendered per recipient from plain data (`RenderContext`), never from ORM
objects, so a template can only see what we put in front of it.

Tags a template can use (the names Close documents):

    {{ contact.first_name }} last_name name title email
    {{ lead.display_name }}  name description url status
    {{ lead.custom["Lead Source"] }}   any custom field by its name; also accepted:
    {{ lead.custom.Lead Source }}      (Close's spelling, inside {{ }} only: rewritten to the
    {{ lead.custom.Lead_Source }}       bracket form) and underscores for spaces; field names
                                        match case-insensitively
    {{ user.first_name }}    last_name name email phone
    {{ organization.name }}

Fallbacks: Close's `{{ contact.first_name|default:"there" }}` and Jinja's
`{{ contact.first_name|default("there") }}` mean the same here: the fallback is used when the tag
is undefined, empty or only whitespace (Jinja's own `default` would keep an empty string, which is
never what a salesperson means).

Every render reports which tags came out empty or undefined (`RenderResult.empty_tags`), so the
preview can show them per recipient. A tag rescued by `default` is not reported.

The sandbox: no loader (no include/import/extends), no globals (no range, cycler, lipsum...),
attributes starting with "_" refused at compile time, method calls refused, a short list of
filters, and `*` / `**` bounded so a template cannot build huge strings.

Bounds (`TemplateLimits`, from the ``BULKMAIL_MAX_RENDERED_*`` and ``BULKMAIL_MAX_RENDER_MS``
settings): what can be known to explode is refused when the template is saved (nested loops, a
variable built from itself with `~`, `+` or `replace`, `replace` of the empty string, a macro
calling itself); at render, the subject and each body part are capped in characters, every
string a template builds (`~`, `+`, `replace`, `join`, `wordwrap`) is measured before it is
built, loops are capped in iterations, and a render that outlasts its time budget stops, each
with a `TemplateLimitError` that names the limit. Nothing a template does can take the process's
memory or more than its budget of CPU.
"""

from __future__ import annotations

import contextvars
import html
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from itertools import islice
from typing import TYPE_CHECKING, Any, NoReturn

from jinja2 import Environment, Template, Undefined, nodes, pass_environment, pass_eval_context
from jinja2.exceptions import SecurityError, TemplateRuntimeError, TemplateSyntaxError, UndefinedError
from jinja2.lexer import Token, TokenStream
from jinja2.nodes import EvalContext
from jinja2.parser import Parser
from jinja2.runtime import Context, Macro, markup_join, str_join
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.visitor import NodeTransformer
from markupsafe import Markup

if TYPE_CHECKING:
    from bulkmail.shared.settings import Settings

__all__ = [
    "CompiledTemplate",
    "ContactData",
    "LeadData",
    "OrganizationData",
    "RenderContext",
    "RenderResult",
    "TemplateError",
    "TemplateLimitError",
    "TemplateLimits",
    "TemplateRenderError",
    "UserData",
    "compile_template",
    "html_to_text",
]

PARTS = ("subject", "body", "body_text")

# ---------------------------------------------------------------------------------------------
# Plain data in


CustomValue = str | int | float | Decimal | date | None


@dataclass(frozen=True, slots=True)
class ContactData:
    name: str = ""
    title: str = ""
    email: str = ""
    # Close splits the contact's single name field; pass these only to override that split.
    first_name: str | None = None
    last_name: str | None = None


@dataclass(frozen=True, slots=True)
class LeadData:
    name: str = ""
    description: str = ""
    url: str = ""
    status: str = ""
    # Empty: the lead's name (the loader may pass the first contact's name for unnamed leads).
    display_name: str = ""
    custom: Mapping[str, CustomValue] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class UserData:
    first_name: str = ""
    last_name: str = ""
    email: str = ""
    phone: str = ""


@dataclass(frozen=True, slots=True)
class OrganizationData:
    name: str = ""


@dataclass(frozen=True, slots=True)
class RenderContext:
    contact: ContactData = field(default_factory=ContactData)
    lead: LeadData = field(default_factory=LeadData)
    user: UserData = field(default_factory=UserData)
    organization: OrganizationData = field(default_factory=OrganizationData)

    @classmethod
    def from_dict(cls, data: Mapping[str, Mapping[str, Any]]) -> RenderContext:
        """Build from plain dicts, e.g. `{"contact": {"name": "Ada Lovelace"}, "lead": {...}}`."""
        return cls(
            contact=ContactData(**data.get("contact", {})),
            lead=LeadData(**data.get("lead", {})),
            user=UserData(**data.get("user", {})),
            organization=OrganizationData(**data.get("organization", {})),
        )


@dataclass(frozen=True, slots=True)
class RenderResult:
    subject: str
    html: str
    text: str
    # Tags that rendered as nothing, in order of first appearance ("contact.first_name").
    empty_tags: list[str]
    # The subset of empty_tags that name nothing we know (typos, unknown custom fields).
    unknown_tags: list[str]


class TemplateError(ValueError):
    """A template part does not compile, or uses something the sandbox refuses."""

    def __init__(self, part: str, line: int, column: int, message: str) -> None:
        super().__init__(f"{part}, line {line}, column {column}: {message}")
        self.part = part
        self.line = line
        self.column = column
        self.message = message


class TemplateRenderError(ValueError):
    """A compiled template failed for one recipient (e.g. a refused operation at run time)."""

    def __init__(self, part: str, line: int | None, message: str) -> None:
        where = f", line {line}" if line else ""
        super().__init__(f"{part}{where}: {message}")
        self.part = part
        self.line = line
        self.message = message


class TemplateLimitError(TemplateRenderError):
    """A render went over one of the template limits; ``limit`` names the setting."""

    def __init__(self, part: str, message: str, limit: str) -> None:
        super().__init__(part, None, message)
        self.limit = limit


@dataclass(frozen=True, slots=True)
class TemplateLimits:
    """What one render may produce and spend. The defaults are the settings' defaults."""

    subject_chars: int = 998  # one header line (RFC 5322)
    part_chars: int = 2_000_000  # the HTML and the text part, each
    render_ms: int = 250  # CPU time of the rendering thread
    loop_iterations: int = 10_000

    @classmethod
    def from_settings(cls, settings: Settings) -> TemplateLimits:
        """The limits an operator configured (``BULKMAIL_MAX_RENDER…``): the API and the mailer alike."""
        return cls(
            subject_chars=settings.max_rendered_subject_chars,
            part_chars=settings.max_rendered_part_chars,
            render_ms=settings.max_render_ms,
            loop_iterations=settings.max_template_loop_iterations,
        )


class _OverLimit(Exception):
    """Raised inside a render; ``CompiledTemplate.render`` turns it into a TemplateLimitError."""

    def __init__(self, message: str, limit: str) -> None:
        super().__init__(message)
        self.limit = limit


@dataclass(slots=True)
class _Budget:
    max_chars: int
    limits: TemplateLimits
    # The budget is CPU time of the rendering thread, not the wall clock: a render merely
    # descheduled on a busy machine must not fail its recipient. Reading the thread's CPU clock
    # costs ~1.3 µs (the wall clock ~60 ns), and CPU time never runs ahead of wall time, so it
    # is read only once the wall clock says the budget may be spent.
    wall_deadline: float = 0.0
    cpu_deadline: float = 0.0

    def start(self) -> None:
        seconds = self.limits.render_ms / 1000
        self.wall_deadline = time.perf_counter() + seconds
        self.cpu_deadline = time.thread_time() + seconds

    def check_time(self) -> None:
        if time.perf_counter() > self.wall_deadline and time.thread_time() > self.cpu_deadline:
            raise _OverLimit(f"rendering took longer than {self.limits.render_ms} ms", "BULKMAIL_MAX_RENDER_MS")

    def check_size(self, n: int) -> None:
        if n > self.max_chars:
            raise _OverLimit(
                f"the text would be longer than {self.max_chars:,} characters", "BULKMAIL_MAX_RENDERED_PART_CHARS"
            )


# The budget of the render in progress (None outside a render: compile-time constant folding).
_BUDGET: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar("_BUDGET", default=None)


def _check_size(n: int) -> None:
    budget = _BUDGET.get()
    if budget is not None:
        budget.check_size(n)


# ---------------------------------------------------------------------------------------------
# What templates see: namespaces that report empty values as tracked undefineds

# The tags of the render in progress (tag -> known). A context variable rather than a global so
# concurrent renders in threads or tasks never mix their reports.
_REPORT: contextvars.ContextVar[dict[str, bool] | None] = contextvars.ContextVar("_REPORT", default=None)


class _Missing(Undefined):
    """An undefined or empty tag: renders as "" and is reported once it reaches the output.

    Only stringifying reports it, so `{% if contact.title %}` and `|default(...)` do not.
    """

    __slots__ = ("_known", "_tag")

    def __init__(
        self,
        hint: str | None = None,
        obj: Any = None,
        name: str | None = None,
        exc: type[TemplateRuntimeError] = UndefinedError,
        *,
        tag: str | None = None,
        known: bool = False,
    ) -> None:
        self._tag = tag or name or "?"
        super().__init__(hint or f"{self._tag} is empty or undefined", obj, name, exc)
        self._known = known

    def __str__(self) -> str:
        report = _REPORT.get()
        if report is not None and self._tag not in report:
            report[self._tag] = self._known
        return ""

    # Chains like `contact.nickname.x` stay undefined instead of raising.
    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return _Missing(tag=f"{self._tag}.{name}")

    def __getitem__(self, name: Any) -> Any:
        return _Missing(tag=f"{self._tag}.{name}")


def _plain(value: CustomValue) -> str:
    if value is None:
        return ""
    if isinstance(value, Decimal):
        # Numeric columns carry trailing zeros ("5000.000000"); people typed "5000".
        return format(value.normalize(), "f") if value == value else ""
    if isinstance(value, datetime):
        return value.date().isoformat() if value.time() == datetime.min.time() else value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def _field_key(name: str) -> str:
    return " ".join(name.replace("_", " ").split()).casefold()


class _Namespace:
    """`contact`, `lead`, `user`, `organization` or `lead.custom` as a template sees it."""

    __slots__ = ("_display", "_known", "_resolved", "_tag", "_values")

    def __init__(self, tag: str, values: Mapping[str, Any], display: str = "", known: bool = True) -> None:
        self._tag = tag
        self._values = values
        self._display = display
        self._known = known  # False for custom fields: any name may exist on some other lead
        # A namespace lives for one render, in which a tag is often used more than once.
        self._resolved: dict[str, Any] = {}

    def lookup(self, name: str) -> Any:
        try:
            return self._resolved[name]
        except KeyError:
            value = self._resolved[name] = self._resolve(name)
            return value

    def _resolve(self, name: str) -> Any:
        if self._tag == "lead.custom":
            hit = self._values.get(_field_key(name))
            if hit is None:
                return _Missing(tag=f"lead.custom.{name}", known=False)
            label, value = hit
            tag = f"lead.custom.{label}"
        else:
            if name not in self._values:
                return _Missing(tag=f"{self._tag}.{name}", known=False)
            value = self._values[name]
            tag = f"{self._tag}.{name}"
        if isinstance(value, _Namespace):
            return value
        if value is None or (isinstance(value, str) and not value.strip()):
            return _Missing(tag=tag, known=True)
        return value

    def __str__(self) -> str:
        return self._display

    def __iter__(self) -> Iterator[str]:
        return iter(())


def _namespaces(ctx: RenderContext) -> dict[str, _Namespace]:
    c, lead, u = ctx.contact, ctx.lead, ctx.user
    first, _, last = c.name.strip().partition(" ")
    contact = {
        "first_name": c.first_name if c.first_name is not None else first,
        "last_name": c.last_name if c.last_name is not None else last.strip(),
        "name": c.name,
        "title": c.title,
        "email": c.email,
    }
    custom = {_field_key(k): (k, _plain(v)) for k, v in lead.custom.items()}
    display_name = lead.display_name or lead.name
    lead_values = {
        "name": lead.name,
        "display_name": display_name,
        "description": lead.description,
        "url": lead.url,
        "status": lead.status,
        "custom": _Namespace("lead.custom", custom),
    }
    user_name = f"{u.first_name} {u.last_name}".strip()
    user = {"first_name": u.first_name, "last_name": u.last_name, "name": user_name}
    user |= {"email": u.email, "phone": u.phone}
    org = {"name": ctx.organization.name}
    return {
        "contact": _Namespace("contact", contact, c.name),
        "lead": _Namespace("lead", lead_values, display_name),
        "user": _Namespace("user", user, user_name),
        "organization": _Namespace("organization", org, ctx.organization.name),
    }


# ---------------------------------------------------------------------------------------------
# The sandbox


def _default(value: Any, default_value: Any = "", boolean: bool = False) -> Any:
    if isinstance(value, Undefined) or value is None or (isinstance(value, str) and not value.strip()):
        return default_value
    if boolean and not value:
        return default_value
    return value


_MAX_SEQUENCE = 10_000
_MAX_INT = 1_000_000


class _Sandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**", "+"})

    def getattr(self, obj: Any, attribute: str) -> Any:
        if isinstance(obj, _Namespace):
            return obj.lookup(attribute)
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        if isinstance(obj, _Namespace):
            return obj.lookup(str(argument))
        return super().getitem(obj, argument)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        # Only macros defined in the template itself; no methods of strings or anything else.
        if not isinstance(__obj, Macro):
            raise SecurityError("templates cannot call functions or methods")
        budget = _BUDGET.get()
        if budget is not None:  # macros are the one way to repeat work besides loops
            budget.check_time()
        return super().call(__context, __obj, *args, **kwargs)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "**":
            raise SecurityError("the power operator is not allowed in templates")
        if operator == "+":
            if isinstance(left, str | list | tuple) and isinstance(right, str | list | tuple):
                _check_size(len(left) + len(right))
            return super().call_binop(context, operator, left, right)
        if isinstance(left, str | list | tuple) or isinstance(right, str | list | tuple):
            count = right if isinstance(right, int) else left
            size = len(left) if not isinstance(left, int) else len(right)
            if isinstance(count, int) and count * max(size, 1) > _MAX_SEQUENCE:
                raise SecurityError("repeating text this many times is not allowed")
        elif isinstance(left, int) and isinstance(right, int) and abs(left * right) > _MAX_INT:
            raise SecurityError("number too large")
        return super().call_binop(context, operator, left, right)


_ALLOWED_FILTERS = {
    "abs", "capitalize", "count", "e", "escape", "first", "float", "forceescape", "int", "join",
    "last", "length", "list", "lower", "replace", "reverse", "round", "safe", "sort", "string",
    "striptags", "title", "trim", "truncate", "unique", "upper", "urlencode", "wordcount", "wordwrap",
}  # fmt: skip


def _make_env() -> _Sandbox:
    env = _Sandbox(
        autoescape=lambda name: name == "body",
        undefined=_Missing,
        loader=None,
        keep_trailing_newline=True,
        cache_size=0,
    )
    env.globals.clear()
    env.filters = {k: v for k, v in env.filters.items() if k in _ALLOWED_FILTERS}
    env.filters["default"] = env.filters["d"] = _default
    env.filters["replace"] = _bounded_replace(env.filters["replace"])
    env.filters["join"] = _bounded_join(env.filters["join"])
    env.filters["wordwrap"] = _bounded_wordwrap(env.filters["wordwrap"])
    env.filters["_loop"] = _loop
    env.filters["_concat"] = _concat
    return env


# Filters that can build text far longer than their input measure the result before building it.
def _bounded_replace(replace: Callable[..., Any]) -> Callable[..., Any]:
    @pass_eval_context
    def bounded(eval_ctx: EvalContext, s: Any, old: Any, new: Any, count: int | None = None) -> Any:
        text, old_text, new_text = str(s), str(old), str(new)
        hits = text.count(old_text) if old_text else len(text) + 1
        if count is not None and count >= 0:
            hits = min(hits, count)
        _check_size(len(text) + hits * max(len(new_text) - len(old_text), 0))
        return replace(eval_ctx, s, old, new, count)

    return bounded


def _bounded_join(join: Callable[..., Any]) -> Callable[..., Any]:
    @pass_eval_context
    def bounded(eval_ctx: EvalContext, value: Any, d: Any = "", attribute: Any = None) -> Any:
        items = list(value)
        _check_size(sum(len(str(item)) for item in items) + len(str(d)) * max(len(items) - 1, 0))
        return join(eval_ctx, items, d, attribute)

    return bounded


def _bounded_wordwrap(wordwrap: Callable[..., Any]) -> Callable[..., Any]:
    @pass_environment
    def bounded(environment: Environment, s: Any, width: int = 79, *args: Any, **kwargs: Any) -> Any:
        wrapstring = kwargs.get("wrapstring", args[1] if len(args) > 1 else None) or "\n"
        width = max(int(width), 1)
        _check_size(len(str(s)) + (len(str(s)) // width + 1) * len(str(wrapstring)))
        return wordwrap(environment, s, width, *args, **kwargs)

    return bounded


def _loop(iterable: Any) -> Iterator[Any]:
    """Every `{% for %}`'s iterable: capped in iterations, and the time budget checked as it goes."""
    budget = _BUDGET.get()
    if budget is None or isinstance(iterable, Undefined):
        yield from iterable
        return
    cap = budget.limits.loop_iterations
    for n, item in enumerate(iterable):
        if n >= cap:
            raise _OverLimit(f"a loop ran more than {cap:,} times", "BULKMAIL_MAX_TEMPLATE_LOOP_ITERATIONS")
        if n % 64 == 0:
            budget.check_time()
        yield item


@pass_eval_context
def _concat(eval_ctx: EvalContext, operands: list[Any]) -> Any:
    """`a ~ b ~ c`, measured before it is joined (Jinja's own Concat joins first)."""
    parts = [str(x) if not hasattr(x, "__html__") else x for x in operands]
    _check_size(sum(len(str(p)) for p in parts))
    return markup_join(parts) if eval_ctx.autoescape else str_join(parts)


_ENV = _make_env()

# ---------------------------------------------------------------------------------------------
# Compiling: Close spellings rewritten, syntax errors located, unsafe constructs refused

_CLOSE_DEFAULT = re.compile(r"""\|\s*default\s*:\s*("(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')""")
# `lead.custom.Lead Source` up to the next filter or the end of the tag: any name that is not a
# plain identifier becomes a bracket lookup (identifiers are matched at run time).
_CLOSE_CUSTOM = re.compile(r"""\blead\.custom\.([^|}"'\[\]\n]*[^|}"'\[\]\s-])(?=\s*(?:\||-?}}))""")
_EXPRESSION = re.compile(r"\{\{.*?\}\}|\{%.*?%\}", re.S)


def _rewrite_close_syntax(source: str) -> str:
    def fix(m: re.Match[str]) -> str:
        text = _CLOSE_DEFAULT.sub(r"|default(\1)", m.group(0))
        if text.startswith("{{"):
            text = _CLOSE_CUSTOM.sub(
                lambda c: c.group(0) if c.group(1).isidentifier() else f"lead.custom[{c.group(1).strip()!r}]",
                text,
            )
        return text

    return _EXPRESSION.sub(fix, source) if "{" in source else source


def _column(line_text: str, tokens: list[Token], failing: Token | None, message: str) -> int:
    """Best-effort 1-based column of the error, found by locating the line's tokens in order."""
    cursor, col = 0, 0
    for tok in tokens:
        text = str(tok.value)
        at = line_text.find(text, cursor) if text else -1
        if at >= 0:
            col, cursor = at, at + len(text)
        if tok is failing:
            break
    if failing is not None and failing.type == "eof":  # unclosed tag: point just past its end
        col = cursor
    # Bracket errors come from the lexer after the last good token: point at the culprit.
    if (m := re.match(r"unexpected '(.)'", message)) and failing is not None and str(failing.value) != m[1]:
        at = line_text.find(m[1], cursor)
        col = at if at >= 0 else col
    return col + 1


def _parse(source: str, original: str, part: str) -> nodes.Template:
    seen: list[Token] = []

    def recording() -> Iterator[Token]:
        for tok in _ENV.lexer.wrap(_ENV.lexer.tokeniter(source, part), part):
            seen.append(tok)
            yield tok

    parser = Parser(_ENV, source, part)
    parser.stream = TokenStream(recording(), part, None)
    try:
        return parser.parse()
    except TemplateSyntaxError as exc:
        line = exc.lineno or 1
        lines = original.splitlines() or [""]
        line_text = lines[min(line, len(lines)) - 1]
        message = exc.message or "syntax error"
        if m := re.search(r" at (\d+)$", message):  # lexer errors carry an offset
            offset = int(m.group(1))
            message = message[: m.start()]
            column = offset - source.rfind("\n", 0, offset)
        else:
            current = parser.stream.current
            column = _column(line_text, [t for t in seen if t.lineno == line], current, message)
        raise TemplateError(part, line, column, message) from None


def _refuse(part: str, source: str, node: nodes.Node, what: str, needle: str = "") -> NoReturn:
    line = node.lineno or 1
    lines = source.splitlines() or [""]
    text = lines[min(line, len(lines)) - 1]
    column = max(text.find(needle), 0) + 1 if needle else 1
    raise TemplateError(part, line, column, what)


def _check(part: str, source: str, tree: nodes.Template) -> None:
    for node in tree.find_all((nodes.Include, nodes.Import, nodes.FromImport, nodes.Extends)):
        keyword = type(node).__name__.lower().replace("fromimport", "from")
        _refuse(part, source, node, f"{{% {keyword} %}} is not available in email templates", keyword)
    for access in tree.find_all((nodes.Getattr, nodes.Getitem)):
        key = access.arg if isinstance(access, nodes.Getitem) else None
        name = access.attr if isinstance(access, nodes.Getattr) else getattr(key, "value", None)
        if isinstance(name, str) and name.startswith("_"):
            _refuse(part, source, access, f"'{name}' is not available in email templates", name)
    for filt in tree.find_all(nodes.Filter):
        if filt.name not in _ENV.filters or filt.name.startswith("_"):  # "_" ones are our guards
            _refuse(part, source, filt, f"unknown filter '{filt.name}'", filt.name)
    for power in tree.find_all(nodes.Pow):
        _refuse(part, source, power, "the power operator is not allowed in templates", "**")
    for const in tree.find_all(nodes.Const):
        if isinstance(const.value, int) and abs(const.value) > _MAX_INT:
            _refuse(part, source, const, "number too large", str(const.value))


def _refuse_explosions(part: str, source: str, tree: nodes.Template) -> None:
    """What can be known at save time to grow without bound, refused with its position."""
    for loop in tree.find_all(nodes.For):
        for inner in [*_descendants(loop.body, nodes.For), *_descendants(loop.else_, nodes.For)]:
            _refuse(part, source, inner, "a loop inside a loop is not allowed in email templates", "for")
    for assign in tree.find_all(nodes.Assign):
        if not isinstance(assign.target, nodes.Name):
            continue
        name = assign.target.name
        uses_itself = any(n.name == name for n in assign.node.find_all(nodes.Name))
        grows = (
            any(True for _ in assign.node.find_all((nodes.Concat, nodes.Add, nodes.Mul)))
            or any(f.name in _GROWING_FILTERS for f in assign.node.find_all(nodes.Filter))
            or isinstance(assign.node, nodes.Concat | nodes.Add | nodes.Mul)
        )
        if isinstance(assign.node, nodes.Filter) and assign.node.name in _GROWING_FILTERS:
            grows = True
        if uses_itself and grows:
            _refuse(part, source, assign, f"'{name}' is built from itself, which can grow it without bound", name)
    for filt in tree.find_all(nodes.Filter):
        if filt.name != "replace" or len(filt.args) < 2:
            continue
        old, new = filt.args[0], filt.args[1]
        if isinstance(old, nodes.Const) and old.value == "":
            _refuse(part, source, filt, "replace of the empty string inserts text between every character", "replace")
        if filt.node is not None and any(n == filt.node for n in [new, *new.find_all(nodes.Expr)]):
            _refuse(part, source, filt, "replace by the text itself can grow it without bound", "replace")
    for macro in tree.find_all(nodes.Macro):
        for call in macro.find_all(nodes.Call):
            if isinstance(call.node, nodes.Name) and call.node.name == macro.name:
                _refuse(part, source, call, f"macro '{macro.name}' calls itself", macro.name)


_GROWING_FILTERS = {"replace", "join", "wordwrap"}


def _descendants(body: list[nodes.Node], kind: type[nodes.Node]) -> Iterator[nodes.Node]:
    for node in body:
        if isinstance(node, kind):
            yield node
        yield from node.find_all(kind)


class _Guard(NodeTransformer):
    """Loops get their iterable through `_loop`, and `~` goes through `_concat` (both bounded)."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = nodes.Filter(node.iter, "_loop", [], [], None, None, lineno=node.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        operands = nodes.List(list(node.nodes), lineno=node.lineno)
        return nodes.Filter(operands, "_concat", [], [], None, None, lineno=node.lineno)


def _compile_tree(part: str, tree: nodes.Template) -> Template:
    _Guard().visit(tree)  # in place: the derived text part reuses the body's (guarded) expressions
    code = _ENV.compile(tree, name=part, filename=f"<template {part}>")
    return _ENV.template_class.from_code(_ENV, code, _ENV.make_globals(None), None)


def _compile_part(part: str, source: str) -> tuple[Template, nodes.Template]:
    rewritten = _rewrite_close_syntax(source)
    tree = _parse(rewritten, source, part)
    _check(part, source, tree)
    _refuse_explosions(part, source, tree)
    return _compile_tree(part, tree), tree


# ---------------------------------------------------------------------------------------------
# HTML to plain text, for templates without a text body

_BLOCK = {
    "address", "article", "aside", "dd", "div", "dl", "dt", "fieldset", "figcaption", "figure",
    "footer", "form", "header", "hr", "li", "main", "nav", "section", "tr",
}  # fmt: skip
_PARAGRAPH = {"p", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "blockquote", "table", "ul", "ol"}
# Dropped with their content; comments, doctype and CDATA too.
_HIDDEN = re.compile(
    r"<(head|script|style|title|template)\b(?:[^>\"']|\"[^\"]*\"|'[^']*')*>.*?</\1\s*>|<!--.*?-->|<![^>]*>",
    re.S | re.I,
)
# html.parser is correct but costs ~0.5 ms for a 2 KB email; a tag-or-text tokenizer is ~10x
# cheaper and enough for the HTML our templates produce (attribute values may contain ">").
_TOKEN = re.compile(r"<(/?)([a-zA-Z][\w:-]*)((?:[^>\"']|\"[^\"]*\"|'[^']*')*)>|([^<]+|<)")
_ATTR = re.compile(r"""\b(href|alt)\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'>]+))""", re.I)
_SPACE = re.compile(r"[ \t\r\n\f\v]+")  # HTML whitespace, not Unicode's (keeps NBSP)
# Private-use characters, never in real HTML: a tag's place, and a link shown only if its
# (tag-made) address is not empty, in text derived at compile time.
_OPEN, _CLOSE, _LINK_START, _LINK_END = "\ue000", "\ue001", "\ue002", "\ue003"


def _attrs(text: str) -> dict[str, str]:
    return {m[1].lower(): html.unescape(m[2] or m[3] or m[4] or "") for m in _ATTR.finditer(text)}


class _TextWriter:
    def __init__(self) -> None:
        self.out: list[str] = []
        self.newlines = 0  # line breaks owed before the next text
        self.pre = 0
        self.links: list[tuple[str, int]] = []  # (href, where the link text starts in out)
        self.at_line_start = True

    def block(self, count: int) -> None:
        if self.out:
            self.newlines = max(self.newlines, count)

    def write(self, text: str) -> None:
        if self.newlines:
            self.out.append("\n" * self.newlines)
            self.newlines = 0
            self.at_line_start = True
        if (self.at_line_start or (self.out and self.out[-1].endswith(" "))) and not self.pre:
            text = text.lstrip(" ")  # collapse spaces across tags, as a browser does
        if text:
            self.out.append(text)
            self.at_line_start = text.endswith("\n")

    def start(self, tag: str, attrs: str) -> None:
        if tag == "br":
            self.write("\n")
        elif tag in _PARAGRAPH or tag in _BLOCK:
            self.block(2 if tag in _PARAGRAPH else 1)
            if tag == "pre":
                self.pre += 1
            elif tag == "li":
                self.write("- ")
            elif tag == "hr":
                self.write("---")
                self.block(1)
        elif tag in ("td", "th"):
            if not self.at_line_start:
                self.write(" ")
        elif tag == "a":
            href = _SPACE.sub(" ", _attrs(attrs).get("href", "")).strip()
            self.links.append((href, len(self.out)))
        elif tag == "img" and (alt := _attrs(attrs).get("alt")):
            self.text(alt)

    def end(self, tag: str) -> None:
        if tag in _PARAGRAPH or tag in _BLOCK:
            if tag == "pre":
                self.pre = max(self.pre - 1, 0)
            self.block(2 if tag in _PARAGRAPH else 1)
        elif tag == "a" and self.links:
            href, start = self.links.pop()
            label = "".join(self.out[start:]).strip()
            # A link whose text already is its address needs no repeat; anchors mean nothing in text.
            if _OPEN in href:
                # A tag in the href: whether to show it is only known per recipient (`_finish_text`).
                self.write(f"{_LINK_START} ({href}){_LINK_END}")
            elif href and not href.startswith(("#", "javascript:")) and href.removeprefix("mailto:") != label:
                self.write(f" ({href})" if label else href)

    def text(self, data: str) -> None:
        self.write(data if self.pre else _SPACE.sub(" ", data))


def html_to_text(markup: str) -> str:
    """Readable plain text of an HTML body: blocks on their own lines, links as `text (url)`."""
    writer = _TextWriter()
    for m in _TOKEN.finditer(_HIDDEN.sub("", markup)):
        if m[4] is not None:
            writer.text(html.unescape(m[4]) if "&" in m[4] else m[4])
        elif m[1]:
            writer.end(m[2].lower())
        else:
            writer.start(m[2].lower(), m[3])
    lines = [line.rstrip(" ") for line in "".join(writer.out).split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip("\n")


# ---------------------------------------------------------------------------------------------
# Deriving the text part at compile time

_PLACEHOLDER = re.compile(f"{_OPEN}(\\d+){_CLOSE}")
_DEFERRED_LINK = re.compile(f"{_LINK_START} \\((.*?)\\){_LINK_END}", re.S)
_SPACES = re.compile(r"  +")
_BLANK_LINES = re.compile(r"\n{3,}")


def _finish_text(text: str) -> str:
    """Tidy a derived text part after the tags are in: an empty tag leaves no double space,
    no space at a line's edge, no blank-line run, no empty "()" after a link."""
    if _LINK_START in text:
        text = _DEFERRED_LINK.sub(
            lambda m: f" ({m[1].strip()})" if m[1].strip() and not m[1].startswith(("#", "javascript:")) else "",
            text,
        )
    # Plain `in` checks and str.replace first: a regex scan of every position costs ~20 µs.
    if "  " in text:
        text = _SPACES.sub(" ", text)
    text = text.replace(" \n", "\n").replace("\n ", "\n").strip(" ")
    if "\n\n\n" in text:
        text = _BLANK_LINES.sub("\n\n", text)
    return text.strip("\n")


def _as_text(value: Any) -> str:
    if isinstance(value, Markup):  # `|safe` HTML from the template author
        return html_to_text(str(value))
    text = str(value)
    # Most values hold no tab, newline or double space (isprintable() is False for any of the
    # first): two C-speed checks instead of a regex pass, per tag per recipient.
    if text.isprintable() and "  " not in text:
        return text
    return _SPACE.sub(" ", text)


_ENV.filters["_as_text"] = _as_text


def _derive_text_template(tree: nodes.Template) -> Template | None:
    """The text part as a template of its own, so html_to_text runs once per template.

    Converting each recipient's HTML costs ~150 µs; most templates are static HTML with tags in
    it, so the HTML is converted once with a placeholder per tag, and each placeholder becomes
    that tag again (rendered as text). Templates with {% if %}/{% for %} fall back to converting
    every rendered HTML (None).
    """
    if not all(isinstance(node, nodes.Output) for node in tree.body):
        return None
    html_parts: list[str] = []
    expressions: list[nodes.Expr] = []
    for output in tree.body:
        assert isinstance(output, nodes.Output)
        for child in output.nodes:
            if isinstance(child, nodes.TemplateData):
                html_parts.append(child.data)
                continue
            # The same tag gets the same placeholder, so `<a href="{{ x }}">{{ x }}</a>` is one.
            index = next((i for i, e in enumerate(expressions) if e == child), len(expressions))
            if index == len(expressions):
                expressions.append(child)
            html_parts.append(f"{_OPEN}{index}{_CLOSE}")
    if "<pre" in "".join(html_parts).lower():  # spacing that must be kept: convert per render
        return None
    pieces = _PLACEHOLDER.split(html_to_text("".join(html_parts)))
    out: list[nodes.Expr] = []
    for i, piece in enumerate(pieces):
        if i % 2 == 0:
            if piece:
                out.append(nodes.TemplateData(piece, lineno=1))
        else:
            expr = expressions[int(piece)]
            out.append(nodes.Filter(expr, "_as_text", [], [], None, None, lineno=expr.lineno))
    text_tree = nodes.Template([nodes.Output(out, lineno=1)], lineno=1)
    text_tree.set_environment(_ENV)
    return _compile_tree("body_text", text_tree)


# ---------------------------------------------------------------------------------------------
# Rendering


def _error_line(exc: BaseException, part: str) -> int | None:
    line = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == f"<template {part}>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _run(template: Template, part: str, variables: dict[str, Any], max_chars: int, shown_max: int = 0) -> str:
    """One part rendered 32 pieces at a time, so an oversized output stops soon after it is too
    long (a loop may print a long value thousands of times), and the clock is read between them.
    (Taken and measured in C: a Python step per piece doubled the time of a typical render.)"""
    budget = _BUDGET.get()
    out: list[str] = []
    size = 0
    pieces = template.root_render_func(template.new_context(variables))
    try:
        while batch := list(islice(pieces, 32)):
            size += sum(map(len, batch))
            if size > max_chars:
                limit = "SUBJECT_CHARS" if part == "subject" else "PART_CHARS"
                raise _OverLimit(
                    f"the rendered {part} is longer than {shown_max or max_chars:,} characters",
                    f"BULKMAIL_MAX_RENDERED_{limit}",
                )
            out += batch
            if budget is not None:
                budget.check_time()
    except _OverLimit as exc:
        raise TemplateLimitError(part, str(exc), exc.limit) from None
    except RecursionError:
        raise TemplateLimitError(part, "the template nests too deeply", "BULKMAIL_MAX_RENDER_MS") from None
    except Exception as exc:  # anything a template does wrong is this recipient's render error
        raise TemplateRenderError(part, _error_line(exc, part), str(exc) or type(exc).__name__) from exc
    return "".join(out)


@dataclass(frozen=True, slots=True)
class CompiledTemplate:
    """A template compiled once; `render` is called per recipient."""

    subject: Template
    body: Template
    # Written by the author, or derived from the body at compile time; None: derived per render.
    body_text: Template | None
    text_is_derived: bool = False
    limits: TemplateLimits = field(default_factory=TemplateLimits)

    def render(self, ctx: RenderContext) -> RenderResult:
        """Raises `TemplateRenderError` (or its `TemplateLimitError`) for this recipient."""
        report: dict[str, bool] = {}
        limits = self.limits
        token = _REPORT.set(report)
        budget = _Budget(limits.part_chars, limits)
        budget.start()
        budget_token = _BUDGET.set(budget)
        try:
            variables: dict[str, Any] = dict(_namespaces(ctx))
            # A subject is one header line: newlines from data or template become spaces.
            budget.max_chars = limits.subject_chars * 4  # before whitespace is collapsed
            # Measured again once whitespace runs are collapsed: 4x leaves room for those.
            raw = _run(self.subject, "subject", variables, limits.subject_chars * 4, limits.subject_chars)
            subject = " ".join(raw.split())
            if len(subject) > limits.subject_chars:
                raise TemplateLimitError(
                    "subject",
                    f"the rendered subject is longer than {limits.subject_chars:,} characters",
                    "BULKMAIL_MAX_RENDERED_SUBJECT_CHARS",
                )
            budget.max_chars = limits.part_chars
            html = _run(self.body, "body", variables, limits.part_chars)
            if self.body_text is None:
                text = html_to_text(html)
            else:
                text = _run(self.body_text, "body_text", variables, limits.part_chars)
                text = _finish_text(text) if self.text_is_derived else text
        finally:
            _BUDGET.reset(budget_token)
            _REPORT.reset(token)
        return RenderResult(
            subject=subject,
            html=html,
            text=text,
            empty_tags=list(report),
            unknown_tags=[tag for tag, known in report.items() if not known],
        )


def compile_template(
    subject: str, body: str, body_text: str = "", limits: TemplateLimits | None = None
) -> CompiledTemplate:
    """Compile a template's three parts; raises `TemplateError` naming the part, line and column."""
    body_template, body_tree = _compile_part("body", body)
    if body_text.strip():
        text_template: Template | None = _compile_part("body_text", body_text)[0]
    else:
        text_template = _derive_text_template(body_tree)
    return CompiledTemplate(
        subject=_compile_part("subject", subject)[0],
        body=body_template,
        body_text=text_template,
        text_is_derived=not body_text.strip() and text_template is not None,
        limits=limits or TemplateLimits(),
    )
