"""The blind baseline on real text: planted and real differences are found, random splits stay in the null."""

from __future__ import annotations

import sysconfig
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold

from lethe.attacks.blind import NOT_EVIDENCE, blind_baseline, blind_classifier, blind_verdict
from lethe.errors import LetheError


def paragraphs(text: str, keep) -> list[str]:
    """Blank-line-separated paragraphs of at least 200 characters, whitespace joined, cut to 300 characters."""
    found = [" ".join(p.split()) for p in text.split("\n\n")]
    return [p[:300] for p in found if len(p) >= 200 and keep(p)]


@pytest.fixture(scope="module")
def prose() -> list[str]:
    """English prose of the Python documentation, as the interpreter ships it (pydoc's topics)."""
    from pydoc_data.topics import topics

    return [p for name in sorted(topics) for p in paragraphs(topics[name], lambda p: p[0].isupper() and p[-1] == ".")]


@pytest.fixture(scope="module")
def code() -> list[str]:
    """Python source of the standard library."""
    lib = Path(sysconfig.get_paths()["stdlib"])
    return [p for name in ("argparse.py", "textwrap.py", "shlex.py") for p in
            paragraphs((lib / name).read_text(), lambda p: True)]


def test_a_planted_marker_is_found(prose):
    """Four characters among ~300 weigh little in l2-normalised n-grams: 60 texts a class make them plain."""
    texts = prose[:120]
    result = blind_baseline([t + " [m]" for t in texts[:60]], texts[60:], permutations=50)
    assert result["auc"] > result["ci95"][1] + 0.1 and result["separable"]
    assert result["p_value"] == pytest.approx(1 / 51)  # no permuted split reaches it
    assert (result["members"], result["nonmembers"], result["folds"], result["permutations"]) == (60, 60, 5, 50)


def test_random_splits_of_one_source_stay_inside_their_permutation_null(prose):
    texts = prose[:40]
    outside = 0
    for split in range(5):  # five random assignments fixed in advance; at 95% one may fall outside by chance
        order = np.random.default_rng(split).permutation(len(texts))
        result = blind_baseline([texts[i] for i in order[:20]], [texts[i] for i in order[20:]])
        low, high = result["ci95"]
        outside += not low <= result["auc"] <= high
        assert low < 0.5 < high and result["separable"] == (not low <= result["auc"] <= high)
    assert outside <= 1


def test_code_and_prose_are_separable(prose, code):
    result = blind_baseline(code[:20], prose[:20], permutations=50)
    assert result["separable"] and result["p_value"] == pytest.approx(1 / 51)


def test_the_fast_features_reproduce_the_scikit_learn_pipeline(prose, code):
    """The per-fold TF-IDF without re-tokenising must give the AUC of the pipeline fitted fold by fold."""
    members, nonmembers = code[:12] + prose[:6], prose[6:24]  # partly separable, so the scores are not all ties
    texts, labels = members + nonmembers, np.r_[np.ones(18, dtype=int), np.zeros(18, dtype=int)]
    scores = np.empty(len(texts))
    for train, test in StratifiedKFold(4, shuffle=True, random_state=3).split(texts, labels):
        pipeline = blind_classifier(seed=3).fit([texts[i] for i in train], labels[train])
        scores[test] = pipeline.decision_function([texts[i] for i in test])
    result = blind_baseline(members, nonmembers, folds=4, permutations=1, seed=3)
    assert result["auc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


def test_folds_are_capped_by_the_smaller_class_and_too_few_texts_are_refused(prose):
    assert blind_baseline(prose[:3], prose[3:10], permutations=5)["folds"] == 3
    with pytest.raises(LetheError, match="at least 2 members and 2 non-members, got 1 and 5"):
        blind_baseline(prose[:1], prose[1:6])
    with pytest.raises(LetheError, match="folds ≥ 2"):
        blind_baseline(prose[:5], prose[5:10], folds=1)


def test_the_same_seed_gives_the_same_result(prose):
    members, nonmembers = prose[:12], prose[12:24]
    first = blind_baseline(members, nonmembers, permutations=30, seed=4)
    assert blind_baseline(members, nonmembers, permutations=30, seed=4) == first
    assert blind_baseline(members, nonmembers, permutations=30, seed=5)["ci95"] != first["ci95"]


def test_blind_verdict():
    separable = {"auc": 0.8, "ci95": [0.35, 0.65], "separable": True}
    assert blind_verdict(0.82, [0.75, 0.89], separable) == NOT_EVIDENCE  # within the blind AUC's reach
    assert blind_verdict(0.95, [0.9, 0.99], separable) is None  # beats the blind baseline clearly
    assert blind_verdict(0.7, None, separable) == NOT_EVIDENCE  # no interval: weaker than the blind classifier
    assert blind_verdict(0.85, None, separable) is None
    assert blind_verdict(0.55, [0.5, 0.6], {"auc": 0.6, "ci95": [0.35, 0.65], "separable": False}) is None


def test_chunks_of_one_document_stay_in_one_fold(prose):
    """Membership is per document: with a document's chunks split across folds, the classifier recognises the
    document and "separates" a random split; grouped folds and a per-document null do not."""
    documents = [" ".join(prose[i:i + 4]) for i in range(0, 4 * 40, 4)]  # 40 documents of ~1,200 characters
    rng = np.random.default_rng(0)
    labels = rng.permutation([1] * 20 + [0] * 20)  # a random split of one source: nothing to find
    chunks = [(d, doc[k * 300:(k + 1) * 300], label) for d, (doc, label) in enumerate(zip(documents, labels,
              strict=True)) for k in range(4)]
    members = [text for _, text, label in chunks if label]
    nonmembers = [text for _, text, label in chunks if not label]
    groups = [str(d) for d, _, label in chunks if label] + [str(d) for d, _, label in chunks if not label]
    grouped = blind_baseline(members, nonmembers, permutations=40, groups=groups)
    assert grouped["ci95"][0] <= grouped["auc"] <= grouped["ci95"][1] and grouped["groups"] == 40
    ungrouped = blind_baseline(members, nonmembers, permutations=40)
    assert ungrouped["auc"] > ungrouped["ci95"][1] > grouped["auc"]  # a false alarm, from recognising documents
    with pytest.raises(LetheError, match="both members and non-members"):
        blind_baseline(members, nonmembers, permutations=5, groups=["one"] * len(members + nonmembers))


def test_a_verdict_saved_as_a_string_reads_as_what_it_says():
    """Leakage studies saved before the fix hold the pooled verdict as "False": not separable."""
    from lethe.attacks.blind import describe, is_separable

    old = {"auc": 0.526, "ci95": [0.410, 0.574], "separable": "False"}
    assert not is_separable(old) and "not separable without the model" in describe(old)
    assert is_separable({**old, "separable": "True"}) and is_separable({**old, "separable": True})


def test_an_auc_below_its_null_is_reported_as_such():
    """A split the classifier reads backwards (AUC below the null's range) is separable too: an attack must beat
    1 − AUC, and the words say below, not "inside its permutation null"."""
    from lethe.attacks.blind import against_null, describe
    from lethe.attacks.mia_suite import blind_note

    below = {"auc": 0.2, "ci95": [0.35, 0.65], **against_null(0.2, 0.35, 0.65)}
    assert below["separable"] and below["below_null"]
    assert not against_null(0.5, 0.35, 0.65)["separable"] and against_null(0.7, 0.35, 0.65)["separable"]
    assert "BELOW its null" in describe(below) and "0.800" in describe(below)
    assert blind_verdict(0.75, None, below) == NOT_EVIDENCE  # under 1 − 0.2
    assert blind_verdict(0.85, None, below) is None
    note = blind_note({"blind": below, "attacks": {"loss": {"blind_verdict": NOT_EVIDENCE}}})
    assert "below its permutation null" in note and "inside" not in note
