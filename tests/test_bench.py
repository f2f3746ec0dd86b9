"""`make bench`'s aggregator at --quick sizes on the micro model: every benchmark runs its real parity
check and lands in one table. Timings are never asserted."""

from __future__ import annotations

import json
import math

import pytest

from bench import run_all


def test_quick_run_builds_one_table_with_every_benchmark(micro_run, data_dir, tmp_path):
    out = tmp_path / "results.json"
    result = run_all.main(["--quick", "--model", str(micro_run), "--data", str(data_dir), "--out", str(out)])

    saved = json.loads(out.read_text())
    assert saved["rows"] == result["rows"] and saved["quick"] is True
    assert saved["machine"]["cpu"] and saved["machine"]["torch_threads"] >= 1 and saved["matmul_peak"]["gflops"] > 0
    assert set(saved["benchmarks"]) == set(run_all.BENCHMARKS) and not saved["errors"]
    for name, record in saved["benchmarks"].items():  # each row can be reproduced by its own CLI
        assert record["command"].startswith(f"python bench/{name}.py --model {micro_run}")

    rows = saved["rows"]
    cached = [f"{method} step, reference cached" for method in ("npo", "npo", "adversarial", "adversarial")]
    assert [r["benchmark"].split(",")[0] for r in rows] == ["unlearning step", *[c.split(",")[0] for c in cached],
                                                             "MIA suite", "MIA suite", "fused head", "fused head",
                                                             "extraction generation"]
    for row in rows:
        assert row["parity"]["passed"], row  # Lethe and the reference computed the same thing
        assert math.isfinite(row["ratio"]) and row["ratio"] > 0
        assert 0 < row["flop_utilisation"]["lethe"] and 0 < row["flop_utilisation"]["reference"]
    mia = saved["benchmarks"]["mia_suite"]["speedup"]
    assert [r["ratio"] for r in rows[5:7]] == [mia["openunlearning"], mia["mimir"]]
    for method, record in saved["benchmarks"]["reference_step"]["methods"].items():  # forwards once per example
        sides = record["sides"]
        assert sides["per_step"]["reference_tokens"] == 3 * sides["lethe"]["reference_tokens"] > 0, method

    table = out.with_suffix(".md").read_text()
    assert "quick check" in table and micro_run.name in table
    assert table.count("| passed: ") == 10 and "| **" in table


def test_a_failing_benchmark_keeps_earlier_results(micro_run, tmp_path):
    out = tmp_path / "results.json"
    out.write_text('{"earlier": true}\n')
    with pytest.raises(SystemExit):
        run_all.main(["--quick", "--only", "mia_suite", "--model", str(micro_run), "--data", str(tmp_path / "none"),
                      "--out", str(out)])
    assert json.loads(out.read_text()) == {"earlier": True}
    failed = json.loads((tmp_path / "results.failed.json").read_text())
    assert list(failed["errors"]) == ["mia_suite"] and not failed["rows"]
    assert "did not run" in (tmp_path / "results.failed.md").read_text()


def test_the_fused_head_off_side_makes_its_own_row(micro_run, data_dir, tmp_path):
    from bench import unlearning_step

    record = unlearning_step.main(["--model", str(micro_run), "--data", str(data_dir), "--steps", "2",
                                   "--batch-size", "2", "--chunk-length", "32", "--repeats", "1",
                                   "--busy-threshold", "999", "--logits-head", "--out", str(tmp_path / "step.json")])
    side = record["logits_head"]
    assert record["compiled"] is None and side["loss_check"]["passed"] and side["tokens_per_s_median"] > 0
    rows = run_all.unlearning_rows(record)
    assert [r["benchmark"] for r in rows] == ["unlearning step", "unlearning step, train.fused_head off"]
    assert rows[1]["ratio"] == side["ratio"] and rows[1]["parity"]["passed"]
