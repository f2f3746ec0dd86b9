"""The report as one self-contained HTML file: inline CSS, figures as data URIs, no script, no external URL."""

from __future__ import annotations

import base64
import json
import re
from html import escape

from lethe.reporting.document import Section, Table

STYLE = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d232b; margin: 0 auto;
       max-width: 1100px; padding: 1.5em 2em 4em; }
h1 { font-size: 1.7em; margin-bottom: .2em; } h2 { border-bottom: 2px solid #d0d7de; padding-bottom: .2em; }
h2, h3, h4 { margin-top: 1.6em; }
.meta { color: #57606a; font-size: .9em; } .path { font-family: ui-monospace, monospace; }
table { border-collapse: collapse; margin: .6em 0 1.2em; font-size: .88em; }
th, td { border: 1px solid #d0d7de; padding: .25em .6em; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; } th { background: #f3f5f7; }
tr:nth-child(even) td { background: #fafbfc; } caption { caption-side: top; text-align: left; color: #57606a;
       padding-bottom: .3em; font-size: .95em; }
.warn { background: #fff4d6; border-left: 4px solid #d4a72c; padding: .4em .8em; margin: .5em 0; }
.note { color: #3b4450; margin: .2em 0; }
figure { display: inline-block; margin: .5em 1em 1em 0; vertical-align: top; max-width: 100%; }
figure img { max-width: 100%; max-height: 520px; border: 1px solid #e1e4e8; }
figcaption { font-size: .85em; color: #57606a; max-width: 640px; }
pre { background: #f6f8fa; padding: .7em; overflow-x: auto; font-size: .82em; }
details { margin: .4em 0; } summary { cursor: pointer; color: #0b5cad; }
.verdicts { background: #eef6ee; border-left: 4px solid #2f8132; padding: .5em 1em; margin: 1em 0; }
.verdicts li { margin: .25em 0; }
section.child { margin-left: 1.2em; padding-left: 1em; border-left: 3px solid #e1e4e8; }
"""


NUMBER = re.compile(r"^[-+−–]?[\d.,]+(e[-+]?\d+)?%?( \(.*\))?$|^[–-]$")


def _cell(text: str) -> str:
    return f'<td class="num">{escape(text)}</td>' if NUMBER.match(text) else f"<td>{escape(text)}</td>"


def html_table(table: Table) -> str:
    caption = f"<caption>{escape(table.caption)}</caption>" if table.caption else ""
    head = "".join(f"<th>{escape(h)}</th>" for h in table.header)
    body = "".join("<tr>" + "".join(_cell(c) for c in row) + "</tr>" for row in table.rows)
    notes = "".join(f'<p class="note">{escape(n)}</p>' for n in table.notes)
    return f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{notes}"


def _details(summary: str, text: str | None) -> str:
    if text is None:
        return f'<p class="note">{escape(summary)}: not saved</p>'
    return f"<details><summary>{escape(summary)}</summary><pre>{escape(text)}</pre></details>"


def _section(section: Section, depth: int) -> str:
    run = section.run
    level = min(2 + depth, 6)
    info = run.info
    when = " → ".join(escape(str(info[k])) for k in ("started", "finished") if k in info)
    parts = [f'<section class="{"child" if depth else "run"}">',
             f"<h{level}>{escape(section.title)}</h{level}>",
             f'<p class="meta"><span class="path">{escape(str(run.path))}</span> · <code>lethe '
             f"{escape(run.command)}</code> · {escape(run.status)}{' · ' + when if when else ''}</p>"]
    parts += [f'<p class="warn">{escape(w)}</p>' for w in run.warnings]
    parts += [f'<p class="note">{escape(n)}</p>' for n in section.notes if n not in run.warnings]
    parts += [html_table(t) for t in section.tables]
    parts += [f"<pre>{escape(t)}</pre>" for t in section.text]
    parts += [f'<figure><img alt="{escape(f.caption)}" src="data:image/png;base64,'
              f'{base64.b64encode(f.png).decode("ascii")}"><figcaption>{escape(f.caption)}</figcaption></figure>'
              for f in section.figures]
    if section.sub_runs is not None:
        parts.append(f"<details><summary>{len(section.sub_runs.rows)} sub-runs</summary>"
                     f"{html_table(section.sub_runs)}</details>")
    parts.append(_details("config.yaml", run.text("config.yaml")))
    env = run.json("env.json")
    parts.append(_details("environment (env.json)", None if env is None else json.dumps(env, indent=2)))
    hashes = run.json("data_hashes.json")
    if hashes is not None:
        parts.append(_details("data hashes", json.dumps(hashes, indent=2)))
    parts += [_section(child, depth + 1) for child in section.children]
    parts.append("</section>")
    return "\n".join(parts)


def _verdicts(sections: list[Section]) -> str:
    lines = [line for section in sections for line in section.verdicts]
    if not lines:
        return ""
    items = "".join(f"<li>{escape(line)}</li>" for line in lines)
    return f'<div class="verdicts" id="verdicts"><h2>What these runs showed</h2><ul>{items}</ul></div>\n'


def render_html(sections: list[Section], overview: Table, generated: str) -> str:
    body = "\n".join(_section(s, 0) for s in sections)
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>Lethe report</title><style>{STYLE}</style></head><body>\n"
            f'<h1>Lethe report</h1><p class="meta">generated {escape(generated)} from saved run files only</p>\n'
            f"{_verdicts(sections)}{html_table(overview)}\n{body}\n</body></html>\n")
