"""Templates cannot explode: refused at save where it can be known, stopped at render otherwise.

Each case is a template a careless or hostile user could write; the render data is a lead with a
20,000-character description (the API's cap on it). Every render must end, quickly, either with
the output or with a `TemplateLimitError` naming the setting.
"""

from __future__ import annotations

import time

import pytest

from bulkmail.shared.templating import (
    RenderContext,
    TemplateError,
    TemplateLimitError,
    TemplateLimits,
    compile_template,
)

BIG = RenderContext.from_dict({"lead": {"name": "Acme", "description": "x" * 20_000}})
DOUBLINGS = "".join(f"{{% set v{i + 1} = v{i} ~ v{i} %}}" for i in range(40))

REFUSED_AT_SAVE = {
    "nested loops": ("{% for a in lead.name %}{% for b in lead.name %}{{ a }}{% endfor %}{% endfor %}", "loop inside"),
    "a variable built from itself": ("{% set a = 'x' %}{% set a = a ~ a %}{{ a }}", "built from itself"),
    "replace by itself": ("{{ lead.description|replace('x', lead.description) }}", "replace by the text itself"),
    "replace of the empty string": ("{{ lead.name|replace('', 'xx') }}", "replace of the empty string"),
    "a recursive macro": ("{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}", "calls itself"),
    "our own guards": ("{{ lead.name|_loop }}", "unknown filter '_loop'"),
}

STOPPED_AT_RENDER = {
    "~ doubling": ("{% set v0 = lead.description %}" + DOUBLINGS + "{{ v40 }}", "BULKMAIL_MAX_RENDERED_PART_CHARS"),
    "+ doubling": (
        "{% set a = lead.description %}{% set b = a + a %}{% set c = b + b %}{% set d = c + c %}"
        "{% set e = d + d %}{% set f = e + e %}{% set g = f + f %}{% set h = g + g %}{{ h }}",
        "BULKMAIL_MAX_RENDERED_PART_CHARS",
    ),
    "replace growth": (
        "{% set r = lead.name * 1000 %}{{ lead.description|replace('x', r) }}",
        "BULKMAIL_MAX_RENDERED_PART_CHARS",
    ),
    "join growth": ("{{ lead.description|list|join(lead.description) }}", "BULKMAIL_MAX_RENDERED_PART_CHARS"),
    "wordwrap growth": (
        "{{ lead.description|wordwrap(1, true, lead.description) }}",
        "BULKMAIL_MAX_RENDERED_PART_CHARS",
    ),
    "output of a long loop": (
        "{% for c in lead.description[:5000] %}{{ lead.description }}{% endfor %}",
        "BULKMAIL_MAX_RENDERED_PART_CHARS",
    ),
    "many copies of a long value": ("{{ lead.description }}" * 200, "BULKMAIL_MAX_RENDERED_PART_CHARS"),
    "a loop too long": ("{% for c in lead.description %}{% endfor %}", "BULKMAIL_MAX_TEMPLATE_LOOP_ITERATIONS"),
    "macros calling each other": (
        "{% macro g(n) %}{% if n %}{{ h(n - 1) }}{{ h(n - 1) }}{% endif %}{% endmacro %}"
        "{% macro h(n) %}{{ g(n) }}{% endmacro %}{{ g(60) }}",
        "BULKMAIL_MAX_RENDER_MS",
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSED_AT_SAVE))
def test_what_can_be_known_to_explode_is_refused_at_compile(case: str) -> None:
    source, message = REFUSED_AT_SAVE[case]
    with pytest.raises(TemplateError) as refused:
        compile_template("s", source)
    assert message in refused.value.message and refused.value.line == 1 and refused.value.column >= 1


@pytest.mark.parametrize("case", sorted(STOPPED_AT_RENDER))
def test_a_render_that_would_explode_stops_at_its_limit(case: str) -> None:
    source, limit = STOPPED_AT_RENDER[case]
    template = compile_template("s", source, limits=TemplateLimits(render_ms=100))
    started = time.thread_time()  # CPU time, what the budget counts (the wall clock varies with load)
    with pytest.raises(TemplateLimitError) as stopped:
        template.render(BIG)
    assert stopped.value.limit == limit and stopped.value.part == "body"
    assert time.thread_time() - started < 1.0


def test_the_subject_is_one_header_line_at_most() -> None:
    template = compile_template("{{ lead.description }}", "b")
    with pytest.raises(TemplateLimitError) as stopped:
        template.render(BIG)
    assert stopped.value.limit == "BULKMAIL_MAX_RENDERED_SUBJECT_CHARS" and "998" in stopped.value.message


def test_ordinary_templates_render_as_before() -> None:
    template = compile_template(
        "Hi {{ contact.first_name|default:'there' }}",
        "{% for c in lead.name %}{{ c|upper }}{% endfor %} {{ lead.name ~ '!' }} {{ lead.name|replace('A', 'a') }}",
    )
    rendered = template.render(RenderContext.from_dict({"lead": {"name": "Acme"}}))
    assert rendered.subject == "Hi there" and rendered.html == "ACME Acme! acme"
