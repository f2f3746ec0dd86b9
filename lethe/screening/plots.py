"""The two distributions `lethe screen` compares: per statistic, the length-adjusted z of the private and held-out
records, and the raw values against token count with the line fitted on the held-out records."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from lethe.screening.statistics import Screen  # noqa: E402

LABELS = {"release": "release loss (nats)", "difference": "release − trusted loss (nats)"}


def plot_screens(records: dict, screens: dict[str, Screen], out_dir: Path) -> list[Path]:
    from lethe.screening.run import statistic_values

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, screen in screens.items():
        fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
        bins = np.histogram_bin_edges(np.concatenate([screen.z, screen.held_out_z]), bins=40)
        left.hist(screen.held_out_z, bins=bins, alpha=0.6, density=True, label=f"held-out ({len(screen.held_out_z)})")
        left.hist(screen.z, bins=bins, alpha=0.6, density=True, label=f"private ({len(screen.z)})")
        if screen.flagged.any():
            left.plot(screen.z[screen.flagged], np.zeros(int(screen.flagged.sum())), "rx", label="flagged")
        left.set_xlabel("length-adjusted z (robust)")
        left.set_ylabel("density")
        left.legend(fontsize=8)
        s = screen.summary
        left.set_title(f"{name}: p = {s['p_value']:.3g}, {s['flagged']} flagged", fontsize=9)
        for role, marker in (("held_out", "o"), ("private", ".")):
            right.scatter(records[role]["tokens"], statistic_values(records, name, role), s=8, marker=marker,
                          alpha=0.6, label=role.replace("_", "-"))
        grid = np.linspace(*np.log([max(1, min(r["tokens"].min() for r in records.values())),
                                    max(r["tokens"].max() for r in records.values())]), 50)
        right.plot(np.exp(grid), screen.fit.intercept + screen.fit.slope * grid, "k-", lw=1,
                   label="held-out fit (Theil–Sen)")
        right.set_xscale("log")
        right.set_xlabel("tokens")
        right.set_ylabel(LABELS[name])
        right.legend(fontsize=8)
        fig.tight_layout()
        path = out_dir / f"screen_{name}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths
