"""Chat template analysis: real templates are clean, every escape spelling is caught."""

from __future__ import annotations

from typing import Any

import pytest

from trainguard.findings import Severity
from trainguard.scan import _jinja

CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
    "{% endif %}"
)
# Shaped like Llama 3.1 / Qwen 2.5 tool-use templates: namespace, tojson, raise_exception,
# strftime_now, selectattr, loop controls and transformers' {% generation %} block.
TOOL_TEMPLATE = """{%- set ns = namespace(system='', found=false) -%}
{%- if messages[0]['role'] == 'system' -%}{%- set ns.system = messages[0]['content'] | trim -%}{%- endif -%}
{%- set date_string = strftime_now("%d %b %Y") if strftime_now is defined else "26 Jul 2024" -%}
{{- bos_token + '<|start_header_id|>system<|end_header_id|>\\n\\n' + 'Today Date: ' + date_string }}
{%- if tools is not none -%}{%- for t in tools -%}{{- t | tojson(indent=4) }}{%- endfor -%}{%- endif -%}
{%- for message in messages | rejectattr('role', 'equalto', 'system') -%}
  {%- if message.tool_calls is defined and message.tool_calls | length > 1 -%}
    {{- raise_exception('only single tool calls are supported') }}
  {%- endif -%}
  {%- if message['role'] == 'assistant' -%}{% generation %}{{ message['content'] }}{% endgeneration %}
  {%- else -%}{{ message.content }}{%- endif -%}
  {%- if loop.index0 > 100 -%}{%- break -%}{%- endif -%}
{%- endfor -%}
{%- for m in messages | selectattr('type', 'equalto', 'image') | map(attribute='url') -%}{{ m }}{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif -%}
"""


def _kinds(source: str, **kw: Any) -> dict[str, Severity]:
    out: dict[str, Severity] = {}
    for issue in _jinja.analyse(source, **kw):
        default = {
            _jinja.SANDBOX_ESCAPE: Severity.CRITICAL,
            _jinja.SUSPICIOUS: Severity.HIGH,
            _jinja.UNPARSABLE: Severity.MEDIUM,
            _jinja.HEURISTIC: Severity.LOW,
        }[issue.kind]
        out[issue.kind] = max(out.get(issue.kind, Severity.INFO), issue.severity or default)
    return out


@pytest.mark.parametrize(
    "template",
    [CHATML, TOOL_TEMPLATE, "plain text, no tags", "", "{{ '______ separator ______' }}"],
)
def test_real_templates_are_clean(template: str) -> None:
    assert _jinja.analyse(template) == []


@pytest.mark.parametrize(
    "template",
    [
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",  # CVE-2024-34359 style
        "{{ self.__init__.__globals__.__builtins__.__import__('os').system('id') }}",
        "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
        "{{ lipsum.__globals__['os'].popen('id').read() }}",
        "{{ x['__globals__'] }}",
        "{{ ''|attr('__cla' + 'ss__') }}",
        "{{ ''|attr('__cla' ~ 'ss__') }}",
        "{{ ''|attr('__ssalc__'|reverse) }}",
        "{{ ''|attr(['__cla', 'ss__']|join) }}",
        "{{ ''|attr('%sclass__'|format('__')) }}",
        "{% set a = '__glo' %}{% set b = a ~ 'bals__' %}{{ f|attr(b) }}",
        "{% set a %}__glo{% endset %}{{ f|attr(a ~ 'bals__') }}",
        "{{ messages|map(attribute='__class__')|list }}",
        "{{ messages|map('attr', '__class__')|list }}",
        "{{ messages|selectattr('__class__')|list }}",
        "{{ x.os.popen('id') }}",
        "{{ x|os }}",
    ],
)
def test_escapes_are_critical(template: str) -> None:
    assert _kinds(template).get(_jinja.SANDBOX_ESCAPE) is Severity.CRITICAL, _jinja.analyse(
        template
    )


@pytest.mark.parametrize(
    ("template", "severity"),
    [
        ("{{ self._TemplateReference__context }}", Severity.HIGH),
        ("{% include 'secret.txt' %}", Severity.HIGH),
        ("{% import 'macros.j2' as m %}", Severity.HIGH),
        ("{% from 'x' import y %}", Severity.HIGH),
        ("{% extends 'base.j2' %}", Severity.HIGH),
        ("{{ x|attr(request.args.a) }}", Severity.HIGH),
        ("{{ x[a ~ b] }}", Severity.HIGH),
        ("{{ joiner() }}", Severity.MEDIUM),
    ],
)
def test_suspicious_constructs(template: str, severity: Severity) -> None:
    assert _kinds(template).get(_jinja.SUSPICIOUS) == severity, _jinja.analyse(template)


def test_template_variables_shadowing_gadget_names_are_fine() -> None:
    assert _jinja.analyse("{% set config = messages[0] %}{{ config['content'] }}") == []


def test_unparsable_templates_are_findings_and_still_pattern_scanned() -> None:
    kinds = _kinds("{% if %}{{ x.__class__ }}")
    assert kinds[_jinja.UNPARSABLE] is Severity.MEDIUM
    assert kinds[_jinja.SANDBOX_ESCAPE] is Severity.CRITICAL
    deep = "{% if a %}" * 2000 + "x" + "{% endif %}" * 2000
    assert _jinja.UNPARSABLE in _kinds(deep)


def test_templates_past_the_limit_are_only_pattern_scanned() -> None:
    big = CHATML + "{{ x.__class__ }}" + " " * 100
    kinds = _kinds(big, max_chars=50)
    assert kinds == {_jinja.UNPARSABLE: Severity.HIGH, _jinja.SANDBOX_ESCAPE: Severity.CRITICAL}


def test_fallback_without_jinja2() -> None:
    assert _kinds(CHATML, use_jinja=False) == {_jinja.HEURISTIC: Severity.LOW}
    kinds = _kinds("{{ self._TemplateReference__context.cycler.__init__ }}", use_jinja=False)
    assert kinds[_jinja.SANDBOX_ESCAPE] is Severity.CRITICAL
    assert kinds[_jinja.SUSPICIOUS] is Severity.HIGH


def test_fallback_when_jinja2_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "jinja2", None)  # import jinja2 now raises ImportError
    kinds = _kinds("{{ x.__class__ }}")
    assert kinds == {_jinja.HEURISTIC: Severity.LOW, _jinja.SANDBOX_ESCAPE: Severity.CRITICAL}
