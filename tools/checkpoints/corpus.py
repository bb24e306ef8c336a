"""A synthetic corpus with enough structure for GPT-tiny to reach test perplexity < 50.

A small probabilistic grammar over 462 token ids of a 512-token vocabulary, written in the
course's file format: ``tokens.npz`` with uint16 arrays ``train`` and ``val`` (as the course's
``data/tokens.npz``) plus ``test.npz`` with ``test`` (the held-out file the checker scores).

Grammar (every document: a topic, then sentences, then the end-of-text token 0)::

    S   -> NP[n] VP[n] ("and" VP[n])? "."            n = singular | plural
    NP  -> Det[n] Adj* Noun[n, topic] (Prep NP)?      Det: a/the (sg), some/the (pl)
    VP  -> Verb[n, topic] (NP | Adv)?

Subject-verb agreement reaches across adjectives and a prepositional phrase whose noun may
have the other number, and the topic (8 of them) shifts noun and verb frequencies for a whole
document, so a model gains from context beyond the previous token. Every derivation is
recoverable from its tokens, so the generator also returns the exact log-probability of the
stream given the topics: ``exp(-logp / tokens)`` is a floor no model can beat on average.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

N_VOCAB = 512
EOT, PERIOD, COMMA, AND, THE, A, SOME = 0, 1, 2, 3, 4, 5, 6
N_NOUNS, N_VERBS, N_ADJ, N_PREP, N_ADV, N_TOPICS = 100, 60, 80, 15, 40, 8
NOUN_SG, NOUN_PL = 10, 10 + N_NOUNS  # plural form = singular id + N_NOUNS
VERB_SG, VERB_PL = 210, 210 + N_VERBS
ADJ, PREP, ADV = 330, 410, 425
DET_DIST = np.array([0.6, 0.4])


@dataclass(frozen=True)
class GrammarProbabilities:
    """Choice probabilities of the grammar (the defaults: floor ~15.5, bigram ~24, unigram ~97)."""

    zipf: float = 1.4
    p_adjective: float = 0.35
    p_pp: float = 0.25
    p_object: float = 0.55
    p_adverb: float = 0.5
    p_and: float = 0.15
    mean_sentences: float = 6.0


class SyntheticGrammar:
    """Samples documents and sums the log-probability of every choice it makes."""

    def __init__(self, seed: int, probs: GrammarProbabilities | None = None):
        self.rng = np.random.default_rng(seed)
        self.p = probs or GrammarProbabilities()
        table = np.random.default_rng(12345)  # the language itself is fixed across seeds
        self.noun_dist = [_zipf(N_NOUNS, self.p.zipf, table.permutation(N_NOUNS)) for _ in range(N_TOPICS)]
        self.verb_dist = [_zipf(N_VERBS, self.p.zipf, table.permutation(N_VERBS)) for _ in range(N_TOPICS)]
        self.adj_dist = _zipf(N_ADJ, self.p.zipf, np.arange(N_ADJ))
        self.adv_dist = _zipf(N_ADV, self.p.zipf, np.arange(N_ADV))
        self.prep_dist = _zipf(N_PREP, self.p.zipf, np.arange(N_PREP))
        self.logp = 0.0
        self.out: list[int] = []
        self._cumulative: dict[int, np.ndarray] = {}

    def stream(self, n_tokens: int) -> tuple[np.ndarray, float]:
        """At least ``n_tokens`` tokens of whole documents (cut to length) and their log-prob."""
        self.out, self.logp = [], 0.0
        while len(self.out) < n_tokens:
            self.document()
        return np.asarray(self.out[:n_tokens], dtype=np.uint16), self.logp

    def document(self) -> None:
        topic = int(self.rng.integers(N_TOPICS))
        p_stop = 1 / self.p.mean_sentences
        while True:
            self.sentence(topic)
            if self._flip(p_stop):
                break
        self.out.append(EOT)

    def sentence(self, topic: int) -> None:
        number = int(self._flip(0.5))
        self.noun_phrase(number, topic, allow_pp=True)
        self.verb_phrase(number, topic)
        if self._flip(self.p.p_and):
            self.out.append(AND)
            self.verb_phrase(number, topic)
        self.out.append(PERIOD)

    def noun_phrase(self, number: int, topic: int, allow_pp: bool) -> None:
        det = self._pick([THE, A] if number == 0 else [THE, SOME], DET_DIST)
        self.out.append(det)
        adjectives = 0
        while adjectives < 3 and self._flip(self.p.p_adjective):
            self.out.append(ADJ + self._pick_index(self.adj_dist))
            adjectives += 1
        self.out.append((NOUN_SG if number == 0 else NOUN_PL) + self._pick_index(self.noun_dist[topic]))
        if allow_pp and self._flip(self.p.p_pp):
            self.out.append(PREP + self._pick_index(self.prep_dist))
            self.noun_phrase(int(self._flip(0.5)), topic, allow_pp=False)

    def verb_phrase(self, number: int, topic: int) -> None:
        self.out.append((VERB_SG if number == 0 else VERB_PL) + self._pick_index(self.verb_dist[topic]))
        if self._flip(self.p.p_object):
            self.noun_phrase(int(self._flip(0.5)), topic, allow_pp=False)
        elif self._flip(self.p.p_adverb):
            self.out.append(ADV + self._pick_index(self.adv_dist))

    def _flip(self, p: float) -> bool:
        hit = bool(self.rng.random() < p)
        self.logp += np.log(p if hit else 1 - p)
        return hit

    def _pick_index(self, dist: np.ndarray) -> int:
        cumulative = self._cumulative.get(id(dist))
        if cumulative is None:
            cumulative = self._cumulative[id(dist)] = np.cumsum(dist)
        index = min(int(np.searchsorted(cumulative, self.rng.random(), side="right")), dist.shape[0] - 1)
        self.logp += np.log(dist[index])
        return index

    def _pick(self, options: list[int], dist: np.ndarray) -> int:
        return options[self._pick_index(dist)]


def _zipf(n: int, exponent: float, order: np.ndarray) -> np.ndarray:
    weights = np.empty(n)
    weights[order] = 1.0 / (np.arange(n) + 2.0) ** exponent
    return weights / weights.sum()


@dataclass(frozen=True)
class CorpusFiles:
    """Where the corpus went and the floor perplexity of its test split."""

    tokens_npz: Path
    test_npz: Path
    test_floor_perplexity: float


def write_corpus(
    out_dir: Path,
    n_train: int = 1_000_000,
    n_val: int = 32_768,
    n_test: int = 32_768,
    seed: int = 0,
) -> CorpusFiles:
    """Write ``tokens.npz`` (train, val) and ``test.npz`` (test) of the synthetic grammar."""
    out_dir.mkdir(parents=True, exist_ok=True)
    train, _ = SyntheticGrammar(seed).stream(n_train)
    val, _ = SyntheticGrammar(seed + 1).stream(n_val)
    test, test_logp = SyntheticGrammar(seed + 2).stream(n_test)
    tokens_npz, test_npz = out_dir / "tokens.npz", out_dir / "test.npz"
    np.savez(tokens_npz, train=train, val=val)
    np.savez(test_npz, test=test)
    # the stream's first token is not scored by the checker; the floor uses all tokens
    floor = float(np.exp(-test_logp / len(test)))
    return CorpusFiles(tokens_npz=tokens_npz, test_npz=test_npz, test_floor_perplexity=floor)
