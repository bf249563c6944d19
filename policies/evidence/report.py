"""HTML rendering of an evidence document, in Kazakh, Russian or English.

Rendering is a pure function of the evidence JSON: `verify` re-renders and compares byte for byte, so
the HTML can never say something the signed JSON does not.
"""

from __future__ import annotations

import hashlib

import jinja2

from policies.evidence.signing import canonical

LABELS = {
    "kk": {
        "title": "Сәйкестік дәлелдемелері",
        "stack": "Стек",
        "generated": "Жасалған уақыты",
        "control": "Бақылау",
        "status": "Күйі",
        "checks": "Тексерулер",
        "evidence": "Дәлелдеме",
        "when": "Уақыты",
        "where": "Орны",
        "sources": "Дереккөздер",
        "layer": "Деңгей",
        "pass": "орындалды",
        "fail": "орындалмады",
        "waived": "ерекшелік ретінде қабылданды",
        "not-run": "тексерілмеді",
        "summary": "Қорытынды",
        "unmatched": "Каталогқа кірмеген нәтижелер",
        "no_checks": "Тексеру жоқ",
        "inputs": "Кіріс файлдар",
        "digest": "JSON SHA-256",
        "oscal": "OSCAL құжаттары",
    },
    "ru": {
        "title": "Доказательства соответствия",
        "stack": "Стек",
        "generated": "Сформировано",
        "control": "Мера",
        "status": "Статус",
        "checks": "Проверки",
        "evidence": "Доказательство",
        "when": "Когда",
        "where": "Где",
        "sources": "Источники",
        "layer": "Уровень",
        "pass": "выполнено",
        "fail": "не выполнено",
        "waived": "принято как исключение",
        "not-run": "не проверено",
        "summary": "Итог",
        "unmatched": "Результаты вне каталога",
        "no_checks": "Нет проверок",
        "inputs": "Входные файлы",
        "digest": "JSON SHA-256",
        "oscal": "Документы OSCAL",
    },
    "en": {
        "title": "Compliance evidence",
        "stack": "Stack",
        "generated": "Generated",
        "control": "Control",
        "status": "Status",
        "checks": "Checks",
        "evidence": "Evidence",
        "when": "When",
        "where": "Where",
        "sources": "Sources",
        "layer": "Layer",
        "pass": "pass",
        "fail": "fail",
        "waived": "waived",
        "not-run": "not run",
        "summary": "Summary",
        "unmatched": "Results not in the catalogue",
        "no_checks": "No checks",
        "inputs": "Input files",
        "digest": "JSON SHA-256",
        "oscal": "OSCAL documents",
    },
}

TEMPLATE = """<!DOCTYPE html>
<html lang="{{ lang }}">
<head>
<meta charset="utf-8">
<meta name="evidence-sha256" content="{{ digest }}">
<title>{{ L.title }}: {{ ev.stack }}</title>
<style>
body { font-family: sans-serif; margin: 2em; }
table { border-collapse: collapse; width: 100%; }
td, th { border: 1px solid #ccc; padding: 4px 8px; vertical-align: top; text-align: left; }
tr.status-pass td.st { background: #c8e6c9; }
tr.status-fail td.st { background: #ef9a9a; }
tr.status-waived td.st { background: #fff59d; }
tr.status-not-run td.st { background: #e0e0e0; }
.small { font-size: 85%; color: #444; }
</style>
</head>
<body>
<h1>{{ L.title }}: {{ ev.stack }}</h1>
<p>{{ L.generated }}: {{ ev.generated }} &middot; {{ L.digest }}: <code>{{ digest }}</code></p>
<p>{{ L.summary }}:{% for s in ["pass", "fail", "waived", "not-run"] %} {{ L[s] }} {{ ev.summary[s] }}
{%- if not loop.last %},{% endif %}{% endfor %}</p>
<table>
<tr><th>{{ L.control }}</th><th>{{ L.status }}</th><th>{{ L.checks }}</th><th>{{ L.sources }}</th></tr>
{% for c in ev.controls %}
<tr id="{{ c.id }}" class="status-{{ c.status }}">
<td><b>{{ c.id }}</b> {{ c.title[lang] }}<div class="small">{{ c.statement[lang] }}</div></td>
<td class="st">{{ L[c.status] }}
{%- for w in c.not_run_because | default([]) %}<div class="small">{{ w }}</div>{% endfor %}</td>
<td>{% if not c.checks %}{{ L.no_checks }}{% endif %}<ul>
{% for k in c.checks %}<li>[{{ k.layer }}] <code>{{ k.check }}</code>: {{ L[k.status] }}
{%- for r in k.results %}<div class="small">{{ L[r.status] }} &middot; {{ r.where }} &middot; {{ r.when }}
&middot; {{ r.evidence }}</div>{% endfor %}</li>
{% endfor %}</ul></td>
<td class="small">{% for s in c.sources %}{{ s }}<br>{% endfor %}</td>
</tr>
{% endfor %}
</table>
{% if ev.unmatched %}<h2>{{ L.unmatched }}</h2>
<ul>{% for r in ev.unmatched %}
<li>[{{ r.layer }}] <code>{{ r.check }}</code>: {{ L[r.status] }}</li>{% endfor %}</ul>
{% endif %}
{% if ev.oscal %}<h2>{{ L.oscal }}</h2>
<ul>{% for name, digest in ev.oscal | dictsort %}
<li><code>{{ name }}</code> {{ digest }}</li>{% endfor %}</ul>
{% endif %}
<h2>{{ L.inputs }}</h2>
<ul>{% for i in ev.inputs %}
<li><code>{{ i.file }}</code> ({{ i.adapter }}, {{ i.results }}) {{ i.sha256 }}</li>
{% endfor %}</ul>
</body>
</html>
"""

_ENV = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, keep_trailing_newline=True)


def render(evidence: dict) -> str:
    lang = evidence["lang"]
    if lang not in LABELS:
        raise ValueError(f"lang {lang!r}: choose one of {', '.join(LABELS)}")
    digest = hashlib.sha256(canonical(evidence)).hexdigest()
    return _ENV.from_string(TEMPLATE).render(ev=evidence, lang=lang, L=LABELS[lang], digest=digest)
