"""The blind baseline: can members and non-members be told apart from their text alone, without the model?

A membership AUC is evidence of membership only if the split itself is not separable: Das et al. (2024,
"Blind baselines beat membership inference attacks for foundation models") beat published attacks with
classifiers that never query the model, because members and non-members differed in date, format or
source. This fits such a classifier (TF-IDF word and character n-grams plus length features, logistic
regression), scores every text out of fold, and compares the cross-validated AUC with the same procedure
run on permuted labels. The verdict is against that null and not against 0.5: at small n, cross-validated
AUCs of a classifier without signal centre a little below 0.5 and spread widely (90% of them between about
0.2 and 0.75 on 12 + 12 paragraphs of one source).
"""

from __future__ import annotations

import numpy as np
from scipy import sparse
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
from sklearn.pipeline import Pipeline, make_pipeline, make_union
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from lethe.errors import LetheError

WORDS = {"ngram_range": (1, 2)}
CHARS = {"analyzer": "char_wb", "ngram_range": (2, 5)}
CLASSIFIER = "logistic regression (C=1) on TF-IDF word 1-2-grams, char_wb 2-5-grams (sublinear tf) and lengths"
NOT_EVIDENCE = "this split is separable without the model; the attack's AUC is not evidence of membership"


def length_features(texts: list[str]) -> np.ndarray:
    """Characters, words and the fraction of digits: dates and numbers alone often give a split away."""
    return np.array([[len(t), len(t.split()), sum(c.isdigit() for c in t) / max(1, len(t))] for t in texts],
                    dtype=np.float64)


def _classifier(seed: int) -> LogisticRegression:
    return LogisticRegression(C=1.0, solver="liblinear", max_iter=1000, random_state=seed)


def blind_classifier(seed: int = 0) -> Pipeline:
    """The classifier as one scikit-learn pipeline: the definition that `blind_baseline` computes faster."""
    lengths = make_pipeline(FunctionTransformer(length_features), StandardScaler())
    features = make_union(TfidfVectorizer(**WORDS), TfidfVectorizer(**CHARS, sublinear_tf=True), lengths)
    return make_pipeline(features, _classifier(seed))


def _counts(vectorizer: CountVectorizer, texts: list[str]) -> sparse.csr_matrix:
    try:
        return vectorizer.fit_transform(texts).tocsr()
    except ValueError:  # no term at all (e.g. no word of two letters): the block adds nothing
        return sparse.csr_matrix((len(texts), 0), dtype=np.int64)


class _Features:
    """`blind_classifier`'s features for any training fold, with every text tokenised only once.

    Re-tokenising per fold costs about a second per cross-validation of 500 texts, a hundred times over
    for the permutation null. A TfidfVectorizer fitted on the training rows keeps the terms that occur
    there and weighs them by idf = ln((1 + n) / (1 + df)) + 1; weighing every other term 0 in counts taken
    over all texts gives the same rows (norms included), with no statistic of the held-out fold leaking in.
    """

    def __init__(self, texts: list[str]) -> None:
        words, chars = _counts(CountVectorizer(**WORDS), texts), _counts(CountVectorizer(**CHARS), texts)
        self.tf = sparse.hstack([words, chars], format="csr", dtype=np.float64)
        self.document_frequency = sparse.csr_matrix((np.ones_like(self.tf.data), self.tf.indices, self.tf.indptr),
                                                    shape=self.tf.shape)
        is_char = np.repeat([False, True], [words.shape[1], chars.shape[1]])[self.tf.indices]
        self.tf.data[is_char] = np.log(self.tf.data[is_char]) + 1  # sublinear tf for character n-grams only
        rows = np.repeat(np.arange(len(texts)), np.diff(self.tf.indptr))
        self.row_block = rows * 2 + is_char  # each (text, block) pair is l2-normalised on its own
        self.lengths = length_features(texts)

    def fold(self, train: np.ndarray, test: np.ndarray) -> tuple[sparse.csr_matrix, sparse.csr_matrix]:
        df = np.asarray(self.document_frequency[train].sum(0)).ravel()
        # terms absent from the training fold weigh 0: as if dropped from the vocabulary, norms included
        idf = np.where(df > 0, np.log((1 + len(train)) / (1 + df)) + 1, 0.0)
        tfidf = self.tf.copy()
        tfidf.data *= idf[tfidf.indices]
        norms = np.sqrt(np.bincount(self.row_block, tfidf.data ** 2, minlength=2 * tfidf.shape[0]))
        tfidf.data /= np.where(norms > 0, norms, 1)[self.row_block]
        mean, std = self.lengths[train].mean(0), self.lengths[train].std(0)
        lengths = (self.lengths - mean) / np.where(std > 0, std, 1)  # StandardScaler fitted on the training fold
        features = sparse.hstack([tfidf, sparse.csr_matrix(lengths)], format="csr")
        return features[train], features[test]


def _cross_validated_auc(features: _Features, labels: np.ndarray, folds: int, seed: int,
                         groups: np.ndarray | None) -> float:
    """One ROC AUC over the out-of-fold decision scores of every text (a group's texts never straddle folds)."""
    scores = np.empty(len(labels))
    splitter = (StratifiedKFold(folds, shuffle=True, random_state=seed) if groups is None else
                StratifiedGroupKFold(folds, shuffle=True, random_state=seed))
    for train, test in splitter.split(np.zeros(len(labels)), labels, groups):
        x_train, x_test = features.fold(train, test)
        scores[test] = _classifier(seed).fit(x_train, labels[train]).decision_function(x_test)
    return float(roc_auc_score(labels, scores))


def _group_index(groups: list[str] | None, labels: np.ndarray) -> np.ndarray | None:
    """Groups as integers; every text of a group must share its label (membership is per document)."""
    if groups is None:
        return None
    if len(groups) != len(labels):
        raise LetheError(f"the blind baseline got {len(groups)} groups for {len(labels)} texts")
    _, index = np.unique(np.asarray(groups, dtype=str), return_inverse=True)
    if any(len(set(labels[index == g])) > 1 for g in np.unique(index)):
        raise LetheError("a group of texts holds both members and non-members")
    return index


def _permuted(labels: np.ndarray, groups: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
    """Labels under the null: shuffled over texts, or over whole groups when texts come in groups."""
    if groups is None:
        return rng.permutation(labels)
    group_labels = np.zeros(groups.max() + 1, dtype=labels.dtype)
    group_labels[groups] = labels
    return rng.permutation(group_labels)[groups]


def blind_baseline(members: list[str], nonmembers: list[str], *, folds: int = 5, permutations: int = 100,
                   seed: int = 0, level: float = 0.95, groups: list[str] | None = None) -> dict:
    """Cross-validated AUC of a model-free member/non-member classifier, against its label-permutation null.

    `separable` means the AUC lies above the null's central `level` range: the texts differ in a way a
    bag of n-grams sees, so any attack must beat this AUC before its own AUC says anything about the model.
    `groups` (members' then non-members', e.g. the document of each chunk) keeps a document's chunks in one
    fold and permutes membership per document: chunks of one document share words, and split across folds
    they would let the classifier recognise the document rather than learn anything about membership.
    """
    smaller = min(len(members), len(nonmembers))
    if smaller < 2:
        raise LetheError(f"the blind baseline needs at least 2 members and 2 non-members, got {len(members)} "
                         f"and {len(nonmembers)}")
    if folds < 2 or permutations < 1 or not 0 < level < 1:
        raise LetheError(f"the blind baseline needs folds ≥ 2, permutations ≥ 1 and 0 < level < 1, got {folds}, "
                         f"{permutations} and {level}")
    labels = np.concatenate([np.ones(len(members), dtype=int), np.zeros(len(nonmembers), dtype=int)])
    index = _group_index(groups, labels)
    if index is not None:
        smaller = min(len(np.unique(index[labels == 1])), len(np.unique(index[labels == 0])))
        if smaller < 2:
            raise LetheError("the blind baseline needs at least 2 member and 2 non-member groups")
    folds = min(folds, smaller)
    features = _Features(list(members) + list(nonmembers))
    auc = _cross_validated_auc(features, labels, folds, seed, index)
    rng = np.random.default_rng(seed)
    null = np.array([_cross_validated_auc(features, _permuted(labels, index, rng), folds, seed, index)
                     for _ in range(permutations)])
    tail = (1 - level) / 2 * 100
    low, high = (float(x) for x in np.percentile(null, [tail, 100 - tail]))
    return {"auc": auc, "ci95": [low, high], "null_mean": float(null.mean()),
            "p_value": float((1 + np.sum(null >= auc)) / (1 + permutations)), **against_null(auc, low, high),
            "members": len(members), "nonmembers": len(nonmembers), "folds": folds, "permutations": permutations,
            "groups": None if index is None else int(index.max() + 1),
            "classifier": CLASSIFIER, "null": [round(float(x), 5) for x in null]}  # the null's draws, to pool seeds


def against_null(auc: float, low: float, high: float) -> dict:
    """The verdict against the null's central range. A split is separable either way: an AUC below the range means
    the texts differ in a way the classifier, trained on the other folds, reads backwards (e.g. a feature whose
    direction flips between folds), which is as much a difference between members and non-members as one above."""
    return {"separable": bool(auc > high or auc < low), "below_null": bool(auc < low)}


def strength(blind: dict) -> float:
    """How well the text alone separates the split: its AUC, or 1 − AUC when the AUC lies below the null."""
    return 1 - blind["auc"] if blind.get("below_null") else blind["auc"]


def is_separable(blind: dict) -> bool:
    """The saved verdict. Leakage studies saved before 2026-12-02 hold it as the string "True" or "False" (a numpy
    bool written out by json's default=str), which a plain truth test would read as separable."""
    return blind["separable"] in (True, "True")


def describe(blind: dict) -> str:
    """One line for tables and reports: the blind AUC against its null, and what it means for the attacks."""
    low, high = blind["ci95"]
    verdict = ("SEPARABLE without the model: an attack AUC not above it is no evidence of membership"
               if is_separable(blind) else "not separable without the model")
    if blind.get("below_null"):
        verdict = ("BELOW its null, so SEPARABLE without the model (read backwards): an attack AUC not above "
                   f"{strength(blind):.3f} is no evidence of membership")
    return (f"Blind baseline (a text classifier, no model): AUC {blind['auc']:.3f}, permutation null 95% range "
            f"{low:.3f}–{high:.3f}: {verdict}.")


def blind_verdict(attack_auc: float, attack_ci: list[float] | None, blind: dict) -> str | None:
    """The warning to print next to an attack's AUC on a separable split, or None when the split is not
    separable or the attack beats the blind AUC beyond its own interval (its lower bound, or without an
    interval its AUC, above the blind AUC)."""
    if not is_separable(blind):
        return None
    beaten = (attack_ci[0] if attack_ci is not None else attack_auc) > strength(blind)
    return None if beaten else NOT_EVIDENCE
