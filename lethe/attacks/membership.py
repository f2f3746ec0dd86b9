"""Membership-inference attacks: small functions of the per-token scores saved by one forward pass.

Convention: a higher score means "more likely a member". MIMIR returns the opposite sign for
every attack below (it ranks with "lower = member"), so a Lethe score is minus MIMIR's.

With NLL(x) the mean negative log-likelihood of a sample's tokens, and log p_t the log-probability
of its t-th token:
- loss             −NLL(x)                                         (Yeom et al., 2018)
- zlib             −NLL(x) / zlib(x), zlib = bytes of the zlib-compressed text (Carlini et al., 2021)
- min_k            mean of the K% lowest log p_t                    (Shi et al., 2024)
- min_k_pp         mean of the K% lowest (log p_t − μ_t) / σ_t, μ_t and σ_t² the mean and variance
                   of log p(·) over the vocabulary under p(·) itself (Zhang et al., 2024, Min-K%++)
- reference_model  NLL_ref(x) − NLL(x): how much more likely the target finds x than a reference
                   model does (Carlini et al., 2021; e.g. the released pre-trained model)
- reference_data   −log of the fraction of an auxiliary non-member set whose NLL is at most NLL(x)
                   (add-one smoothed): a p-value calibrated on known non-members, so a threshold
                   picked on it has a known false-positive rate (population attack, Ye et al., 2022)
- gradnorm         −mean over parameter tensors of ‖∇ NLL(x)‖_p (members sit in flatter regions;
                   Maini et al., 2024, as MIMIR and OpenUnlearning compute it)
- lira_online, lira_offline, rmia
                   per-example tests against reference victims trained on random halves of the records
                   (Carlini et al., 2022; Zarifzadeh et al., 2024): lethe.attacks.per_example
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from lethe.attacks import per_example
from lethe.errors import LetheError
from lethe.registry import Registry
from lethe.scoring import TokenScores


@dataclass
class AttackInputs:
    """Everything the attacks may read about one set of samples; each attack says which fields it needs."""

    target: TokenScores
    texts: list[str] | None = None
    reference: TokenScores | None = None  # the same samples scored by the reference model
    calibration_nll: np.ndarray | None = None  # per-sample NLL of auxiliary non-members under the target
    grad_norms: np.ndarray | None = None
    reference_victims: ReferenceVictimScores | None = None  # the same samples under each reference victim

    @property
    def vocab_stats(self) -> tuple[np.ndarray, np.ndarray]:
        """Per target token, the mean and variance of log p(·) over the vocabulary (NaN when not scored)."""
        return self.target.vocab_mean, self.target.vocab_var


@dataclass
class ReferenceVictimScores:
    """Per-record scores (mean token log-likelihood) under K reference victims, and which of them saw each record.

    `population` and `population_keep`: the same for RMIA's population samples (the calibration records).
    """

    scores: np.ndarray  # (K, N)
    keep: np.ndarray  # (K, N) bool
    population: np.ndarray | None = None  # (K, P)
    population_keep: np.ndarray | None = None  # (K, P) bool


@dataclass(frozen=True)
class Attack:
    score: Callable[..., np.ndarray]
    needs: tuple[str, ...] = ()  # what of AttackInputs it reads beyond `target`: run_mia builds only these
    params: tuple[str, ...] = ()  # MiaConfig fields passed as keyword arguments

    def __call__(self, inputs: AttackInputs, **params) -> np.ndarray:
        missing = [field for field in self.needs if getattr(inputs, field) is None]
        if missing:
            raise LetheError(f"this attack needs {missing[0]}, which was not given")
        return self.score(inputs, **{k: v for k, v in params.items() if k in self.params})


attacks: Registry[Attack] = Registry("attack")


def attack(name: str, needs: tuple[str, ...] = (), params: tuple[str, ...] = ()):
    def add(score: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
        attacks.register(name)(Attack(score, needs, params))
        return score

    return add


def loss_score(scores: TokenScores) -> np.ndarray:
    return -scores.sample_nll()


def _lowest_fraction_mean(values: np.ndarray, offsets: np.ndarray, k: float) -> np.ndarray:
    """Per sample, the mean of its K% lowest values (at least one)."""
    out = np.empty(len(offsets) - 1)
    for i in range(len(out)):
        sample = values[offsets[i]:offsets[i + 1]].astype(np.float64)
        count = max(1, int(len(sample) * k / 100))
        out[i] = np.partition(sample, count - 1)[:count].mean()
    return out


def min_k_score(scores: TokenScores, k: float = 20) -> np.ndarray:
    return _lowest_fraction_mean(scores.logprob, scores.offsets, k)


@attack("loss")
def _loss(inputs: AttackInputs) -> np.ndarray:
    return loss_score(inputs.target)


@attack("zlib", needs=("texts",))
def _zlib(inputs: AttackInputs) -> np.ndarray:
    entropy = np.array([len(zlib.compress(text.encode("utf-8"))) for text in inputs.texts], dtype=np.float64)
    return -inputs.target.sample_nll() / entropy


@attack("min_k", params=("min_k",))
def _min_k(inputs: AttackInputs, min_k: float = 20) -> np.ndarray:
    return min_k_score(inputs.target, min_k)


@attack("min_k_pp", needs=("vocab_stats",), params=("min_k",))
def _min_k_pp(inputs: AttackInputs, min_k: float = 20) -> np.ndarray:
    s, (mean, var) = inputs.target, inputs.vocab_stats
    if len(var) and np.isnan(var[0]):
        raise LetheError("these scores were taken without vocabulary statistics; min_k_pp needs them")
    z = (s.logprob.astype(np.float64) - mean) / np.sqrt(np.maximum(var.astype(np.float64), 1e-12))
    return _lowest_fraction_mean(z, s.offsets, min_k)


@attack("reference_model", needs=("reference",))
def _reference_model(inputs: AttackInputs) -> np.ndarray:
    if inputs.reference.ids != inputs.target.ids or not np.array_equal(inputs.reference.target_ids,
                                                                        inputs.target.target_ids):
        raise LetheError("reference scores are not of the same tokens as the target's")
    return inputs.reference.sample_nll() - inputs.target.sample_nll()


@attack("reference_data", needs=("calibration_nll",))
def _reference_data(inputs: AttackInputs) -> np.ndarray:
    calibration = np.sort(inputs.calibration_nll)
    at_most = np.searchsorted(calibration, inputs.target.sample_nll(), side="right")
    return -np.log((at_most + 1) / (len(calibration) + 1))


@attack("gradnorm", needs=("grad_norms",))
def _gradnorm(inputs: AttackInputs) -> np.ndarray:
    return -inputs.grad_norms


def aligned_scores(inputs: AttackInputs) -> tuple[np.ndarray, np.ndarray, dict]:
    """The target's and the reference victims' per-record scores, each model's minus its mean on the population
    records (the calibration set) it never trained on (per_example.model_offsets), and those offsets."""
    victims = inputs.reference_victims
    if victims.population is None or inputs.calibration_nll is None:
        raise LetheError("LiRA aligns each model by its scores on population records it never saw: give calibration "
                         "records (known non-members) that the reference victims' manifest lists")
    target_offset, reference_offsets = per_example.model_offsets(-inputs.calibration_nll, victims.population,
                                                                 victims.population_keep)
    offsets = {"target": target_offset, "references": reference_offsets.tolist()}
    return loss_score(inputs.target) - target_offset, victims.scores - reference_offsets[:, None], offsets


@attack("lira_online", needs=("reference_victims", "calibration_nll"))
def _lira_online(inputs: AttackInputs) -> np.ndarray:
    target, references, _ = aligned_scores(inputs)
    return per_example.lira_online(target, references, inputs.reference_victims.keep).scores


@attack("lira_offline", needs=("reference_victims", "calibration_nll"))
def _lira_offline(inputs: AttackInputs) -> np.ndarray:
    target, references, _ = aligned_scores(inputs)
    return per_example.lira_offline(target, references, inputs.reference_victims.keep).scores


def rmia_fit(inputs: AttackInputs, rmia_gamma: float = 1.0, rmia_a: float = 1.0,
             rmia_offline: bool = False) -> per_example.RmiaFit:
    """RMIA with the calibration records (never in the target's training data) as population samples."""
    victims = inputs.reference_victims
    return per_example.rmia(loss_score(inputs.target), victims.scores, victims.keep, -inputs.calibration_nll,
                            victims.population, victims.population_keep, gamma=rmia_gamma, a=rmia_a,
                            offline=rmia_offline)


@attack("rmia", needs=("reference_victims", "calibration_nll"), params=("rmia_gamma", "rmia_a", "rmia_offline"))
def _rmia(inputs: AttackInputs, **params) -> np.ndarray:
    return rmia_fit(inputs, **params).scores
