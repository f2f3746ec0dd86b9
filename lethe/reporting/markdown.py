"""The report's markdown twin: the same tables, figures as PNG files beside it."""

from __future__ import annotations

import json

from lethe.reporting.document import Section, Table


def _block(summary: str, text: str | None, language: str) -> str:
    if text is None:
        return f"{summary}: not saved"
    return f"<details><summary>{summary}</summary>\n\n```{language}\n{text.rstrip()}\n```\n\n</details>"


def _section(section: Section, depth: int, figure_names: dict[int, str]) -> list[str]:
    run = section.run
    parts = [f"{'#' * min(2 + depth, 6)} {section.title}",
             f"`{run.path}` · `lethe {run.command}` · {run.status}"]
    parts += [f"> **warning:** {w}" for w in run.warnings]
    parts += [f"- {n}" for n in section.notes if n not in run.warnings]
    parts += [t.to_markdown() for t in section.tables]
    parts += [f"```\n{t}\n```" for t in section.text]
    parts += [f"![{f.caption}]({figure_names[id(f)]})\n\n*{f.caption}*" for f in section.figures]
    if section.sub_runs is not None:
        parts.append(section.sub_runs.to_markdown())
    parts.append(_block("config.yaml", run.text("config.yaml"), "yaml"))
    env = run.json("env.json")
    parts.append(_block("environment (env.json)", None if env is None else json.dumps(env, indent=2), "json"))
    hashes = run.json("data_hashes.json")
    if hashes is not None:
        parts.append(_block("data hashes", json.dumps(hashes, indent=2), "json"))
    for child in section.children:
        parts += _section(child, depth + 1, figure_names)
    return parts


def render_markdown(sections: list[Section], overview: Table, generated: str, figure_names: dict[int, str]) -> str:
    parts = ["# Lethe report", f"generated {generated} from saved run files only"]
    if verdicts := [line for section in sections for line in section.verdicts]:
        parts += ["## What these runs showed", "\n".join(f"- {line}" for line in verdicts)]
    parts.append(overview.to_markdown())
    for section in sections:
        parts += _section(section, 0, figure_names)
    return "\n\n".join(parts) + "\n"
