"""`lethe retrain`: exact retraining, a `lethe pretrain` run's own recipe without the forget splits."""

from __future__ import annotations

from pathlib import Path

from lethe.recipes import ACCEPT_DATA_CHANGE, RESUME, recipe


def retrain(run, forget: list[str], out, *, overwrite: bool = False, resume: bool = False,
            accept_data_change: bool = False) -> dict:
    """`lethe retrain`: the `lethe pretrain` run `run` repeated without the splits `forget`."""
    from lethe.training.pretrain import retrain as repeat

    return repeat(Path(run), forget, Path(out), overwrite=overwrite, resume=resume,
                  accept_data_change=accept_data_change)


def main(args) -> None:
    from lethe.tables import format_ppl_table

    results = retrain(getattr(args, "from"), args.forget.split(","), args.out, overwrite=args.overwrite,
                      resume=args.resume, accept_data_change=args.accept_data_change)
    if results:
        print(format_ppl_table(results["ppl"]))


def arguments(parser) -> None:
    parser.add_argument("--from", required=True, metavar="RUN", help="the `lethe pretrain` run to repeat")
    parser.add_argument("--forget", required=True, metavar="S1,S2", help="splits to leave out, e.g. code/forget")


# its runs record themselves as `pretrain` runs, so the pretrain recipe reports them
recipe(command="retrain", help="exact retraining: a pretrain run's recipe without the forget splits", run=retrain,
       switches=RESUME | ACCEPT_DATA_CHANGE, arguments=arguments, main=main, api_function=retrain,
       multi_process=True)
