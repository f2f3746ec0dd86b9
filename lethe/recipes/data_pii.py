"""`lethe data pii`: real documents with injected synthetic PII, as fine-tuning data and attack targets."""

from __future__ import annotations

from lethe.config import PiiConfig
from lethe.recipes import DATA, Flag, lazy, recipe


def summary(manifest: dict, config: PiiConfig, out) -> None:
    docs = manifest["documents"]
    print(f"{manifest['members']} member {manifest['target']} (x{manifest['repetitions']}) among {docs['filler']} "
          f"filler documents; {manifest['nonmembers']} non-members; {docs['validation']} validation documents\n"
          f"written to {config.out}")


recipe(command="data pii", help="real documents with injected synthetic PII: a fine-tuning set and attack targets",
       schema=PiiConfig, run=lazy("lethe.data.pii", "build_pii"), api_name="build_pii", out="none",
       flags={"out": Flag("directory to write (required)"), "data": Flag(DATA),
              "seed": Flag("Faker and shuffling seed")},
       summary=summary)
