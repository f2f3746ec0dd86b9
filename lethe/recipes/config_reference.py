"""`lethe config reference`: the markdown reference of every command's config (docs/config.md) or of the Python
API (docs/api.md), rendered from the code."""

from __future__ import annotations

from pathlib import Path

from lethe.recipes import recipe


def main(args) -> None:
    from lethe.config.reference import render_api_reference, render_config_reference

    text = render_api_reference() if args.api else render_config_reference()
    if args.out is None:
        print(text, end="")
        return
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text, encoding="utf-8")
    print(f"written to {args.out}")


def arguments(parser) -> None:
    parser.add_argument("--out", metavar="FILE", help="write it here instead of printing it")
    parser.add_argument("--api", action="store_true", help="the Python API (lethe.__all__) instead (docs/api.md)")


# a command of the CLI only: in Python, call lethe.config.reference's renderers
recipe(command="config reference", help="markdown reference of every command's config (docs/config.md)",
       run=main, out="none", overwrite=False, arguments=arguments, main=main, in_api=False)
