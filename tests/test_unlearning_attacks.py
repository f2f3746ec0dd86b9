"""The attacks on unlearning (quantization, relearning) and TOFU's forget quality: hand-worked cases, and both
attacks run by `lethe eval unlearning` against the original and the exact retrain."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import lethe
from lethe.attacks.quantization import quantize_model, quantize_rtn
from lethe.attacks.relearning import recovery
from lethe.errors import LetheError
from lethe.unlearning.evaluation import forget_quality


def test_four_bit_round_to_nearest_matches_the_hand_computation():
    # range [-1.25, 2.5] over 15 steps: scale 0.25, zero point 5; w/s = -5, 1.2, 2.4, 10 → codes 0, 6, 7, 15
    weight = torch.tensor([[-1.25, 0.3, 0.6, 2.5]])
    assert quantize_rtn(weight, bits=4, group_size=4).tolist() == [[-1.25, 0.25, 0.5, 2.5]]
    # a positive-only group still keeps 0 exact: range [0, 3] over 3 steps at 2 bits, scale 1
    assert quantize_rtn(torch.tensor([[0.4, 1.4, 3.0]]), bits=2, group_size=3).tolist() == [[0.0, 1.0, 3.0]]


def test_groups_have_their_own_scale_and_a_narrow_last_group_too():
    weight = torch.tensor([[-1.25, 0.3, 0.6, 2.5, 0.4, 1.4, 3.0]])
    expected = [[-1.25, 0.25, 0.5, 2.5, 0.4, 1.4, 3.0]]  # the last three columns: 8 bits on [0, 3] is near-exact
    assert quantize_rtn(weight, bits=4, group_size=4)[:, :4].tolist() == [expected[0][:4]]
    np.testing.assert_allclose(quantize_rtn(weight, bits=8, group_size=4)[:, 4:], [expected[0][4:]], atol=3 / 255)
    with pytest.raises(LetheError, match="choose 2 to 8"):
        quantize_rtn(weight, bits=1)


def test_eight_bits_stays_close_and_four_bits_moves_further(micro_model):
    model, _ = micro_model
    int8, int4 = quantize_model(model, 8, 32), quantize_model(model, 4, 32)
    layer = "model.layers.0.mlp.down_proj.weight"
    original = dict(model.named_parameters())[layer]
    error8 = (dict(int8.named_parameters())[layer] - original).abs().max().item()
    error4 = (dict(int4.named_parameters())[layer] - original).abs().max().item()
    assert 0 < error8 < error4
    assert torch.equal(int4.get_input_embeddings().weight, model.get_input_embeddings().weight)
    assert dict(model.named_parameters())[layer] is original  # the model itself is left as it was


def test_rouge_l_is_the_f1_of_the_longest_common_subsequence():
    from lethe.attacks.verbatim import rouge_l_f1

    assert rouge_l_f1([1, 2, 3, 4], [1, 3, 4, 5]) == pytest.approx(0.75)  # LCS 1 3 4: precision = recall = 3/4
    assert rouge_l_f1([1, 2], [1, 2, 3, 4]) == pytest.approx(2 / 3)  # precision 1, recall 1/2
    assert rouge_l_f1([7, 7], [1, 2]) == 0.0 and rouge_l_f1([], [1]) == 0.0 and rouge_l_f1([5, 6], [5, 6]) == 1.0


def test_forget_quality_is_the_ks_p_value():
    same = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    assert forget_quality(same, same.copy()) == 1.0
    # five against five, no overlap: KS statistic 1, exact two-sided p = 2 / C(10, 5) = 2 / 252
    assert forget_quality(same, same + 10) == pytest.approx(2 / 252)


@pytest.fixture(scope="module")
def forgotten(micro_run, data_dir, tmp_path_factory):
    """A micro model that gradient ascent made forget books' forget set, and the micro model retrained without it."""
    from lethe.cli import main

    out = tmp_path_factory.mktemp("forgotten")
    forget = ["--set", "train.lr=3e-3", "--set", "train.epochs=1", "--set", "train.batch_size=8",
              "--set", "train.warmup_ratio=0"]
    assert main(["unlearn", "--model", str(micro_run), "--data", str(data_dir), "--domain", "books", "--method",
                 "ga", *forget, "--out", str(out / "ga")]) == 0
    assert main(["retrain", "--from", str(micro_run), "--forget", "books/forget", "--out", str(out / "re")]) == 0
    return out / "ga", out / "re"


def one_token_chunks(logprobs: list[float]):
    """Chunks of one scored token each: any Min-K% score of a chunk is its one log-probability."""
    from lethe.scoring import TokenScores

    n = len(logprobs)
    return TokenScores(ids=[f"d{i}#0" for i in range(n)], offsets=np.arange(n + 1), target_ids=np.zeros(n, int),
                       logprob=np.array(logprobs, np.float32), vocab_mean=np.zeros(n, np.float32),
                       vocab_var=np.ones(n, np.float32), correct=np.zeros(n, bool))


def test_privleak_and_the_retrain_distance_of_a_hand_worked_case():
    """Members −1…−4 against non-members −1.5…−4.5: 10 of 16 pairs ordered, AUC 0.625; the retrain's members
    −2…−5: 6 of 16, AUC 0.375. PrivLeak = (0.625 − 0.375) / 0.375 = 2/3; forget PPL ratio e^(2.5 − 3.5)."""
    from lethe.config import UnlearnEvalConfig
    from lethe.unlearning.evaluation import retrain_distance

    approximate = one_token_chunks([-1.5, -2.5, -3.5, -4.5])
    unlearned = {"forget": one_token_chunks([-1, -2, -3, -4]), "approximate": approximate}
    retrained = {"forget": one_token_chunks([-2, -3, -4, -5]), "approximate": approximate}
    distance = retrain_distance(unlearned, retrained, UnlearnEvalConfig(mink_k=[50], headline_k=50))
    assert distance["mia_auc"] == pytest.approx(0.25)
    assert distance["privleak"] == pytest.approx(2 / 3)
    assert distance["forget_ppl_ratio"] == pytest.approx(math.exp(-1))
    # every document one nat apart under the two models: every resample of documents gives the same ratio
    assert distance["forget_ppl_ratio_ci95"] == pytest.approx([math.exp(-1), math.exp(-1)])
    assert distance["forget_quality"] == forget_quality(np.array([1.0, 2, 3, 4]), np.array([2.0, 3, 4, 5]))
    assert distance["loss_spearman"] == pytest.approx(1.0)


def test_a_paired_perplexity_ratio_resamples_whole_documents():
    """Two chunks of document a (3 + 1 tokens) and one of b (2 tokens): NLL sums a 6 vs 2, b 1 vs 3 under the two
    models, so the ratio is e^((7 − 5) / 6) and a resample of documents lies between b alone and a alone."""
    from lethe.scoring import TokenScores
    from lethe.unlearning.evaluation import document_nll, paired_ppl_ratio

    def scored(logprobs: list[list[float]]) -> TokenScores:
        flat = np.array([x for chunk in logprobs for x in chunk], np.float32)
        n = len(flat)
        return TokenScores(ids=["a#0", "a#1", "b#0"], offsets=np.cumsum([0, *map(len, logprobs)]),
                           target_ids=np.zeros(n, int), logprob=flat, vocab_mean=np.zeros(n, np.float32),
                           vocab_var=np.ones(n, np.float32), correct=np.zeros(n, bool))

    model = document_nll(scored([[-1, -2, -2], [-1], [-0.5, -0.5]]))
    reference = document_nll(scored([[-0.5, -0.5, -0.5], [-0.5], [-1.5, -1.5]]))
    assert model == {"a": [6.0, 4], "b": [1.0, 2]} and reference == {"a": [2.0, 4], "b": [3.0, 2]}
    paired = paired_ppl_ratio(model, reference, resamples=2000)
    assert paired["ratio"] == pytest.approx(math.exp(2 / 6)) and paired["documents"] == 2
    low, high = paired["ci95"]
    assert math.exp(-2 / 2) <= low < paired["ratio"] < high <= math.exp(4 / 4)
    with pytest.raises(LetheError, match="same documents"):
        paired_ppl_ratio(model, {"a": [2.0, 4]})


@pytest.mark.slow
def test_eval_unlearning_runs_both_attacks_against_original_and_retrain(forgotten, micro_run, data_dir, tmp_path):
    """An unlearned, an original and an exactly retrained micro model, each scored again at 8 and 4 bits and after
    2 and 4 relearning steps: every number is rebuilt from the scores the run saved and the curves it reports."""
    from lethe.cli import main
    from lethe.scoring import TokenScores

    unlearned, retrained = forgotten
    assert main(["eval", "unlearning", "--model", str(unlearned), "--original", str(micro_run),
                 "--retrained", str(retrained), "--data", str(data_dir), "--domain", "books",
                 "--set", "quantize=[8,4]", "--set", "quantize_group=32", "--set", "relearn.steps=[2,4]",
                 "--set", "relearn.lr=1e-3", "--set", "verbmem.prefix_tokens=16",
                 "--set", "verbmem.continuation_tokens=16", "--out", str(tmp_path / "eval")]) == 0
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    scores = tmp_path / "eval" / "scores"

    def ppl(who: str, bits: int | None = None) -> float:
        where = scores / who / "attacks" / f"int{bits}" if bits else scores / who
        return TokenScores.load(where / "books" / "forget").perplexity()

    for who in ("unlearned", "original", "retrained"):
        assert set(results[who]["quantized"]) == {"int8", "int4"}
        for bits in (8, 4):
            row = results[who]["quantized"][f"int{bits}"]
            assert row["forget_ppl"] == pytest.approx(ppl(who, bits), rel=1e-12)
            assert row["forget_ppl_ratio"] == pytest.approx(ppl(who, bits) / ppl("retrained", bits))
        # eight bits barely moves a model; four bits moves it more
        assert abs(math.log(ppl(who, 8) / ppl(who))) < abs(math.log(ppl(who, 4) / ppl(who))) + 1e-3
        assert abs(math.log(ppl(who, 8) / ppl(who))) < 0.05
    kept = results["unlearned"]["quantized"]["int4"]["forgetting_kept"]
    hand = math.log(ppl("unlearned", 4) / ppl("original", 4)) / math.log(ppl("unlearned") / ppl("original"))
    assert kept == pytest.approx(hand)
    check_relearning(results, scores)
    saved = {who: json.loads((scores / who / "attacks" / "verbmem.json").read_text())
             for who in ("original", "retrained")}
    for who, per_chunk in saved.items():
        assert results[who]["verbmem"]["rouge_l"] == pytest.approx(np.mean(list(per_chunk.values())))
        assert results[who]["verbmem"]["chunks"] == len(per_chunk) > 0
    # positive control: the model trained on the forget set writes more of it back than its exact retrain
    assert results["original"]["verbmem"]["rouge_l"] > results["retrained"]["verbmem"]["rouge_l"]
    from lethe.reporting.sections import fmt

    assert main(["report", str(tmp_path / "eval")]) == 0
    assert f"| unlearned | int4 | {fmt(results['unlearned']['quantized']['int4']['forget_ppl'])} |" in (
        tmp_path / "eval" / "report.md").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])  # fixed before the first run, with steps and learning rate
def test_relearning_on_forget_text_restores_the_unlearned_model_faster_than_the_retrain_learns_it(
        forgotten, micro_run, data_dir, seed):
    """The premise of the relearning attack, on three fine-tuning orders: gradient ascent hid the forget set
    rather than removed it, so fine-tuning on half of it lowers the held-out half's loss more for the unlearned
    model than for the model that never saw it."""
    from lethe.attacks.relearning import relearning_curves
    from lethe.config import ChunkConfig, RelearnConfig, UnlearnEvalConfig
    from lethe.data.roles import RunData
    from lethe.models import load_model, model_context
    from lethe.unlearning.evaluation import score_roles

    curves = {}
    for who, path in zip(("unlearned", "original", "retrained"), (forgotten[0], micro_run, forgotten[1]),
                         strict=True):
        model, tokenizer = load_model(path)
        data = RunData.load(data_dir, "books", tokenizer, ChunkConfig(), model_context(model))
        scores = score_roles(model, tokenizer, data, 4096)
        curves[who] = relearning_curves(model, tokenizer, data, scores, RelearnConfig(steps=[4], lr=1e-3, seed=seed),
                                        UnlearnEvalConfig())
    rows = recovery(curves, 4)
    # (the retrain's own drop may be negative: four steps at this rate on six documents need not help a model that
    # never saw their siblings)
    assert rows["unlearned"]["forget_set"]["drop"] > rows["retrained"]["forget_set"]["drop"]
    assert rows["unlearned"]["forget_set"]["recovered_beyond_retrain"] > 0


def test_recovery_is_not_a_share_of_a_rise_too_small_to_measure():
    def curve(before: float, after: float) -> list[dict]:
        return [{"steps": 0, "forget_ppl": before}, {"steps": 4, "forget_ppl": after}]

    curves = {who: {mode: curve(*points) for mode in ("forget_set", "retain_only")}
              for who, points in {"original": (20.0, 19.0), "barely": (20.2, 19.0), "forgot": (40.0, 30.0)}.items()}
    rows = recovery(curves, 4)
    assert rows["barely"]["forget_set"]["recovered"] is None  # 1% rise: a share of it would read 6.1 (610%)
    assert "1.010×" in rows["barely"]["forget_set"]["recovered_note"]
    assert rows["forgot"]["forget_set"]["recovered"] == pytest.approx(math.log(40 / 30) / math.log(40 / 20))
    assert "recovered_note" not in rows["forgot"]["forget_set"]


def check_relearning(results: dict, scores) -> None:
    from lethe.scoring import TokenScores

    def held_out_ppl(who: str) -> float:  # the forget documents after the first half by id: never fine-tuned on
        full = TokenScores.load(scores / who / "books" / "forget")
        docs = sorted({chunk_id.split("#")[0] for chunk_id in full.ids})
        kept = set(docs[round(len(docs) / 2):])
        logprob = np.concatenate([full.sample(i) for i, c in enumerate(full.ids) if c.split("#")[0] in kept])
        return float(np.exp(-logprob.astype(np.float64).mean()))

    log = {who: {mode: [math.log(p["forget_ppl"]) for p in results[who]["relearn"][mode]["curve"]]
                 for mode in ("forget_set", "retain_only")} for who in ("unlearned", "original", "retrained")}
    for who in log:
        for mode, curve in log[who].items():
            assert [p["steps"] for p in results[who]["relearn"][mode]["curve"]] == [0, 2, 4]
            assert math.exp(curve[0]) == pytest.approx(held_out_ppl(who), rel=1e-4)
            assert results[who]["relearn"][mode]["drop"] == pytest.approx(curve[0] - curve[-1])
    row = results["unlearned"]["relearn"]["forget_set"]
    rise = log["unlearned"]["forget_set"][0] - log["original"]["forget_set"][0]
    assert rise > 0 and row["recovered"] == pytest.approx((log["unlearned"]["forget_set"][0]
                                                           - log["unlearned"]["forget_set"][-1]) / rise)
    retrained_drop = log["retrained"]["forget_set"][0] - log["retrained"]["forget_set"][-1]
    assert row["recovered_beyond_retrain"] == pytest.approx(row["recovered"] - retrained_drop / rise)
    assert row["forget_ppl_ratio"] == pytest.approx(math.exp(log["unlearned"]["forget_set"][-1]
                                                             - log["retrained"]["forget_set"][-1]))
    assert "forget_ppl_ratio" not in results["retrained"]["relearn"]["forget_set"]
    # each point keeps its held-out documents' sums, which rebuild its perplexity and pair it with the retrain's
    for point in results["unlearned"]["relearn"]["forget_set"]["curve"]:
        nll, tokens = np.sum(list(point["forget_documents"].values()), axis=0)
        assert math.exp(nll / tokens) == pytest.approx(point["forget_ppl"], rel=1e-6)
    low, high = row["forget_ppl_ratio_ci95"]
    assert low <= row["forget_ppl_ratio"] <= high
    # the attack's premise on this model: the unlearned model's forgetting comes back faster than the retrain
    # learns the same documents from scratch
    assert row["drop"] > retrained_drop


def test_a_subset_of_scores_is_those_samples_alone():
    from lethe.scoring import TokenScores

    def scores(ids, lengths):
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        values = np.arange(offsets[-1], dtype=np.float32)
        return TokenScores(ids=ids, offsets=offsets, target_ids=values.astype(int), logprob=-values / 10,
                           vocab_mean=values, vocab_var=values, correct=values > 3)

    full, alone = scores(["a", "b", "c"], [2, 3, 1]), scores(["a", "c"], [2, 1])
    part = full.subset({"c", "a"})
    assert part.ids == ["a", "c"] and part.offsets.tolist() == [0, 2, 3]
    np.testing.assert_array_equal(part.logprob, np.array([0, -0.1, -0.5], dtype=np.float32))
    assert part.perplexity() == pytest.approx(np.exp(0.2)) and alone.lengths.tolist() == part.lengths.tolist()


def test_a_verbatim_test_longer_than_a_chunk_is_refused_before_any_model_loads():
    from lethe.config import EvalUnlearningConfig
    from lethe.errors import LetheError

    with pytest.raises(LetheError, match="must fit in chunk.length"):
        lethe.resolve(EvalUnlearningConfig, {"model": "m", "chunk": {"length": 48}, "verbmem": {"prefix_tokens": 32}})


def test_a_deletion_request_narrows_the_forget_role_and_refuses_unknown_documents():
    from lethe.data.chunking import Chunk
    from lethe.data.documents import Document
    from lethe.data.roles import RunData, role_splits

    splits = role_splits("books")
    documents = {name: [Document(f"{name}-{i}", "text") for i in range(3)] for name in splits.values()}
    chunks = {name: [Chunk(f"{d.id}#0", d.id, (1, 2, 3)) for d in docs] for name, docs in documents.items()}
    data = RunData("books", splits, documents, chunks)
    asked = data.forgetting_only(["books/forget-1"])
    assert [d.id for d in asked.role_documents("forget")] == ["books/forget-1"]
    assert [c.id for c in asked.role_chunks("forget")] == ["books/forget-1#0"]
    assert asked.role_chunks("retain") == data.role_chunks("retain")
    with pytest.raises(LetheError, match=r"forget_documents: \['nope'\] is not in books/forget"):
        data.forgetting_only(["books/forget-1", "nope"])


def test_study_settings_that_cannot_run_are_refused_before_any_work():
    from pydantic import ValidationError

    from lethe.config import UnlearningStudyConfig

    with pytest.raises(ValidationError, match="sequential: 1 is the study itself"):
        UnlearningStudyConfig(model="m", requests={"sequential": 1})
    with pytest.raises(ValidationError, match="must fit in unlearn.chunk.length"):
        UnlearningStudyConfig(model="m", unlearn={"chunk": {"length": 32}}, verbmem={"prefix_tokens": 32})
