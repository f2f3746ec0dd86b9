"""The one table model: its markdown, terminal and HTML renderings carry the same cells."""

import re

from lethe.attacks.mia_suite import format_mia_table, mia_table
from lethe.demo import SUMMARY_ATTACKS
from lethe.leakage.report import HEADLINE_ATTACKS
from lethe.reporting.html import html_table
from lethe.tables import Table

TABLE = Table(["model", "forget PPL", "AUC", ""],
              [["original", "3.63", "0.973", "member"], ["ga", "1.17e+14", "–", ""]],
              caption="two models", notes=["AUC: Min-K%", "– = not measured"], align="lrr")


def test_markdown_is_a_pipe_table_with_its_caption_and_notes():
    assert TABLE.to_markdown().split("\n") == [
        "*two models*", "",
        "| model | forget PPL | AUC | |",
        "|---|---:|---:|---|",
        "| original | 3.63 | 0.973 | member |",
        "| ga | 1.17e+14 | – | |", "",
        "AUC: Min-K%", "",
        "– = not measured"]


def test_terminal_columns_line_up_and_can_be_given_widths():
    assert TABLE.to_terminal().split("\n") == [
        "two models",
        "model     forget PPL    AUC        ",
        "original        3.63  0.973  member",
        "ga          1.17e+14      –        ",
        "AUC: Min-K%",
        "– = not measured"]
    assert Table(["a", "b"], [["x", "1"]]).to_terminal([4, 3]) == "a     b\nx     1"


def test_html_carries_the_same_cells_numbers_right_aligned():
    html = html_table(TABLE)
    assert re.findall(r"<th>(.*?)</th>", html) == TABLE.header
    body = html.split("<tbody>", 1)[1]
    assert [re.findall(r"<td[^>]*>(.*?)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", body)] == TABLE.rows
    assert '<td class="num">1.17e+14</td>' in html and "<td>original</td>" in html
    assert "<caption>two models</caption>" in html and '<p class="note">– = not measured</p>' in html


def mia_results(blind: dict | None) -> dict:
    metrics = {"auc": 0.8123, "ci95": {"auc": [0.7, 0.9]}, "tpr@0.1%fpr": 0.01, "tpr@1%fpr": 0.05, "tpr@5%fpr": 0.2}
    return {"attacks": {"loss": metrics, "zlib": {**metrics, "auc": 0.4, "ci95": {}, "blind_verdict": True}},
            **({"blind": blind} if blind else {})}


def test_the_mia_table_and_its_markdown_are_one_object():
    table = mia_table(mia_results(None))
    assert table.rows == [["loss", "0.812 (0.700–0.900)", "0.010", "0.050", "0.200"],
                          ["zlib", "0.400", "0.010", "0.050", "0.200"]]
    assert table.notes == [] and format_mia_table(mia_results(None)) == table.to_markdown()
    separable = mia_table(mia_results({"auc": 0.7, "ci95": [0.4, 0.6], "separable": True}))
    assert separable.rows[-1] == ["blind baseline (text only, no model)", "0.700 (null 0.400–0.600)", "–", "–", "–"]
    assert separable.notes[0].startswith("Blind baseline: a text classifier separates members")
    assert "For zlib: this split is separable without the model" in separable.notes[0]


def test_a_rate_at_an_fpr_below_one_over_n_is_not_estimated():
    few = {**mia_results(None), "nonmembers": 50}  # 1/50 = 2%: TPR@0.1% and @1% cannot be estimated, @5% can
    assert mia_table(few).rows[0][2:] == ["n/a (n=50)", "n/a (n=50)", "0.200"]
    assert mia_table({**few, "nonmembers": 1000}).rows[0][2:] == ["0.010", "0.050", "0.200"]


def test_the_demo_summary_shows_headline_attacks():
    assert set(SUMMARY_ATTACKS) <= set(HEADLINE_ATTACKS)


def test_the_leakage_tables_show_min_k_pp_where_it_ran():
    """The strongest population attack was run in every study but missing from its tables and forest plot."""
    from lethe.leakage.report import _attacks

    ran = ["loss", "min_k_pp", "zlib", "lira_online"]
    results = {"variants": {"benign": {"full": {"mia": dict.fromkeys(ran, {})}}}}
    assert _attacks(results) == ["loss", "min_k_pp", "lira_online"]
