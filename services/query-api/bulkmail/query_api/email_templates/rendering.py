"""Templates as the API compiles and renders them: under the configured limits, errors as 400s.

A render that fails for a recipient (a refused operation, a limit reached) is the user's
template's fault, never the server's: it is a 400 naming the part, and for a limit the setting
(``limit``), never a 500, a gigabyte or seconds of CPU.
"""

from __future__ import annotations

from functools import lru_cache

from bulkmail.query_api.errors import BadRequest
from bulkmail.shared.settings import Settings
from bulkmail.shared.templating import (
    CompiledTemplate,
    RenderContext,
    RenderResult,
    TemplateError,
    TemplateLimitError,
    TemplateLimits,
    TemplateRenderError,
    compile_template,
)


def limits_from(settings: Settings) -> TemplateLimits:
    return TemplateLimits.from_settings(settings)


# Every preview compiled its template again (1.6 ms for a three-line one, more for a real email).
# A compiled template is immutable and keyed here by its text and limits, so an edit is a new
# entry; 64 cover the templates a team previews at once.
COMPILED_TEMPLATES_CACHED = 64


@lru_cache(maxsize=COMPILED_TEMPLATES_CACHED)
def _compiled(subject: str, body: str, body_text: str, limits: TemplateLimits) -> CompiledTemplate:
    return compile_template(subject, body, body_text, limits)


def compile_or_400(settings: Settings, subject: str, body: str, body_text: str, name: str = "") -> CompiledTemplate:
    try:
        return _compiled(subject, body, body_text, limits_from(settings))
    except TemplateError as exc:
        what = f"Template {name!r}" if name else "The template"
        raise BadRequest(
            f"{what}'s {exc.part} does not compile at line {exc.line}, column {exc.column}: {exc.message}",
            part=exc.part,
            line=exc.line,
            column=exc.column,
        ) from None


def render_error(exc: TemplateRenderError, name: str = "", recipient: str = "") -> BadRequest:
    what = f"Template {name!r}" if name else "The template"
    whom = f" for {recipient}" if recipient else ""
    if isinstance(exc, TemplateLimitError):
        return BadRequest(
            f"{what} cannot be rendered{whom}: {exc.message} ({exc.limit}).", part=exc.part, limit=exc.limit
        )
    where = f" at line {exc.line}" if exc.line else ""
    return BadRequest(f"{what}'s {exc.part} fails{whom}{where}: {exc.message}", part=exc.part)


def render_or_400(template: CompiledTemplate, ctx: RenderContext, name: str = "", recipient: str = "") -> RenderResult:
    try:
        return template.render(ctx)
    except TemplateRenderError as exc:
        raise render_error(exc, name, recipient) from None


def check_limits_at_save(template: CompiledTemplate) -> None:
    """What explodes whatever the data (``{{ "x" * 9999 }}`` a thousand times) is known at save:
    a render with empty data that reaches a limit refuses the template. Other render errors may
    depend on the data, so they wait for the preview and the send."""
    try:
        template.render(RenderContext())
    except TemplateLimitError as exc:
        raise render_error(exc) from None
    except TemplateRenderError:
        pass
