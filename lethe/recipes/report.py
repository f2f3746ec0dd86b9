"""`lethe report`: an HTML report and its markdown twin from run directories, without rerunning a model."""

from __future__ import annotations

from lethe.recipes import recipe


def report(runs, out=None, *, overwrite: bool = False):
    """`lethe report`: report.html and report.md from run directories, without rerunning a model."""
    from lethe.reporting import write_report

    return write_report(runs, out, overwrite=overwrite)


def main(args) -> None:
    html = report(args.runs, args.out, overwrite=args.overwrite)
    print(f"report written to {html} and {html.with_suffix('.md')}")


def arguments(parser) -> None:
    parser.add_argument("runs", nargs="+", metavar="RUN", help="run directories; sub-runs inside them are included")
    parser.add_argument("--out", help="directory for report.html and report.md (default: the run's own, for one run)")


recipe(command="report", help="an HTML report and its markdown twin from run directories (reads only what the runs "
       "saved)", run=report, out="none", arguments=arguments, main=main, api_function=report)
