"""Tests of the token exit table against a plain-Python reference, plus the behaviour GEEP relies on."""

from __future__ import annotations

import math
from collections import defaultdict

import pytest
import torch
from safetensors.torch import save_file

from geep.exit_table import ExitTable, layers_from_distribution

PAD, CLS, SEP = 0, 1, 2
SPECIAL = (PAD, CLS, SEP)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


# ------------------------------------------------------------------------------------------------------------
# Plain-Python reference (dicts and loops)
# ------------------------------------------------------------------------------------------------------------


def _tokens(ids: list[int], mask: list[int]) -> list[int | None]:
    """The row's tokens with padding and special tokens replaced by None (positions kept)."""
    return [t if m and t not in SPECIAL else None for t, m in zip(ids, mask)]


def _pairs(toks: list[int | None]) -> list[tuple[int, tuple[int, int]]]:
    return [(t, (a, b)) for t, (a, b) in enumerate(zip(toks, toks[1:])) if a is not None and b is not None]


class Reference:
    def __init__(self, ids: torch.Tensor, mask: torch.Tensor, layers: torch.Tensor, L: int, ngram: int) -> None:
        self.L, self.N, self.ngram = L, ids.shape[0], ngram
        self.hist = [0] * L
        self.uni: dict[int, list[int]] = defaultdict(lambda: [0] * L)
        self.bi: dict[tuple[int, int], list[int]] = defaultdict(lambda: [0] * L)
        for row, m, layer in zip(ids.tolist(), mask.tolist(), layers.tolist()):
            toks = _tokens(row, m)
            self.hist[layer - 1] += 1
            for k in {t for t in toks if t is not None}:
                self.uni[k][layer - 1] += 1
            if ngram == 2:
                for k in {pair for _, pair in _pairs(toks)}:
                    self.bi[k][layer - 1] += 1
        self.pi = [h / self.N for h in self.hist]

    def keys(self, row: list[int], mask: list[int], min_count: int) -> list[list[int]]:
        """Count vectors of the row's distinct keys, with the documented back-off."""
        toks = _tokens(row, mask)
        covered: set[int] = set()
        bigrams: set[tuple[int, int]] = set()
        if self.ngram == 2:
            for t, pair in _pairs(toks):
                if pair in self.bi and sum(self.bi[pair]) >= min_count:
                    bigrams.add(pair)
                    covered |= {t, t + 1}
        unigrams = {tok for t, tok in enumerate(toks) if tok is not None and t not in covered}
        return [self.bi[k] for k in bigrams] + [self.uni[k] for k in unigrams if k in self.uni]

    def distribution(
        self, row: list[int], mask: list[int], min_count: int, a: float, idf: bool = True, combine: str = "mean"
    ) -> list[float]:
        num, den = [0.0] * self.L, 0.0
        for counts in self.keys(row, mask, min_count):
            n_k = sum(counts)
            if n_k == 0:
                continue
            w = math.log(self.N / n_k) if idf else 1.0
            p = [(counts[l] + a * self.pi[l]) / (n_k + a) for l in range(self.L)]
            if combine == "mean":
                for l in range(self.L):
                    num[l] += w * p[l]
            elif combine == "geometric":
                for l in range(self.L):
                    num[l] += w * math.log(max(p[l], 1e-300))
            else:  # vote: the key's median layer gets its weight
                cdf = 0.0
                for l in range(self.L):
                    cdf += p[l]
                    if cdf >= 0.5 or l == self.L - 1:
                        num[l] += w
                        break
            den += w
        if den == 0:
            return list(self.pi)
        if combine == "geometric":
            e = [math.exp(x / den) for x in num]
            return [x / sum(e) for x in e]
        return [x / den for x in num]


# ------------------------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------------------------


def random_rows(n: int, T: int, low: int, high: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """[CLS] tokens [SEP] PAD..., with random lengths and an occasional SEP in the middle."""
    ids = torch.randint(low, high, (n, T), generator=gen)
    lengths = torch.randint(1, T - 1, (n,), generator=gen)
    ids[:, 0] = CLS
    mid = torch.rand(n, generator=gen) < 0.3
    ids[mid, T // 2] = SEP  # breaks bigrams across it
    pos = torch.arange(T).unsqueeze(0)
    ids = torch.where(pos == lengths.unsqueeze(1) + 1, torch.full_like(ids, SEP), ids)
    mask = (pos <= lengths.unsqueeze(1) + 1).long()
    ids = torch.where(mask.bool(), ids, torch.full_like(ids, PAD))
    return ids, mask


@pytest.fixture
def corpus() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    ids, mask = random_rows(80, 16, 3, 12, gen)  # tiny vocab so unigrams and bigrams repeat
    layers = torch.randint(1, 5, (80,), generator=gen)
    return ids, mask, layers


def build(corpus, **kw) -> ExitTable:
    ids, mask, layers = corpus
    kw = {"num_layers": 4, "vocab_size": 50, "special_ids": SPECIAL, **kw}
    return ExitTable.build(ids, mask, layers, **kw)


def queries() -> tuple[torch.Tensor, torch.Tensor]:
    """Fresh rows mixing seen (3..11) and unseen (12..49) tokens, plus hand-made edge rows."""
    gen = torch.Generator().manual_seed(1)
    ids, mask = random_rows(40, 16, 3, 14, gen)
    edge = [
        [CLS, SEP] + [PAD] * 14,  # no key at all
        [CLS, 40, 41, 42, SEP] + [PAD] * 11,  # only unseen tokens
        [CLS, 5, SEP] + [PAD] * 13,  # a single token: no pair
        [CLS, 3, 3, 3, 3, 4, 4, 3, 3, SEP] + [PAD] * 6,  # repeated keys count once
    ]
    edge_mask = [[int(t != PAD) for t in row] for row in edge]
    return torch.cat([ids, torch.tensor(edge)]), torch.cat([mask, torch.tensor(edge_mask)])


# ------------------------------------------------------------------------------------------------------------
# Build
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
def test_unigram_counts_match_reference(corpus, device) -> None:
    table = build([t.to(device) for t in corpus], ngram=1)
    ref = Reference(*corpus, L=4, ngram=1)
    expected = torch.zeros(50, 4, dtype=torch.long)
    for k, counts in ref.uni.items():
        expected[k] = torch.tensor(counts)
    assert torch.equal(table.unigram_counts.cpu(), expected)
    assert torch.equal(table.unigram_df.cpu(), expected.sum(1))
    assert table.exit_counts.tolist() == ref.hist
    assert table.num_rows == 80
    assert table.bigram_keys is None


@pytest.mark.parametrize("device", DEVICES)
def test_bigram_counts_match_reference(corpus, device) -> None:
    table = build([t.to(device) for t in corpus], ngram=2)
    ref = Reference(*corpus, L=4, ngram=2)
    expected = sorted((a * 50 + b, counts) for (a, b), counts in ref.bi.items())
    assert table.bigram_keys.tolist() == [k for k, _ in expected]
    assert table.bigram_counts.tolist() == [c for _, c in expected]
    assert table.bigram_df.tolist() == [sum(c) for _, c in expected]
    # The unigram table is built too (for back-off).
    assert table.unigram_counts[5].tolist() == ref.uni[5]


def test_build_is_deterministic_and_chunk_invariant(corpus) -> None:
    a = build(corpus, ngram=2, chunk_size=3)
    b = build(corpus, ngram=2, chunk_size=3)
    c = build(corpus, ngram=2, chunk_size=1000)
    for name, tensor in a.tensors().items():
        assert torch.equal(tensor, b.tensors()[name]), name
        assert torch.equal(tensor, c.tensors()[name]), name


def test_build_rejects_bad_input(corpus) -> None:
    ids, mask, layers = corpus
    with pytest.raises(ValueError, match="exit layers"):
        build((ids, mask, layers + 1))  # layer 5 > L = 4
    with pytest.raises(ValueError, match="token ids"):
        build((ids + 50, mask, layers))
    with pytest.raises(ValueError, match="ngram"):
        build(corpus, ngram=3)


# ------------------------------------------------------------------------------------------------------------
# Predict
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    ("ngram", "min_count", "smoothing"), [(1, 2, 1.0), (1, 2, 0.0), (2, 1, 1.0), (2, 2, 0.5), (2, 4, 2.0)]
)
def test_distribution_matches_reference(corpus, device, ngram, min_count, smoothing) -> None:
    table = build([t.to(device) for t in corpus], ngram=ngram, min_count=min_count, smoothing=smoothing)
    ref = Reference(*corpus, L=4, ngram=ngram)
    ids, mask = queries()
    q = table.predict_distribution(ids.to(device), mask.to(device)).cpu()
    rows = zip(ids.tolist(), mask.tolist())
    expected = torch.tensor([ref.distribution(r, m, min_count, smoothing) for r, m in rows], dtype=torch.float64)
    assert torch.allclose(q, expected, atol=1e-9, rtol=0)
    assert torch.allclose(q.sum(1), torch.ones(len(q), dtype=q.dtype))
    # The no-key and unseen-only rows get pi exactly.
    pi = torch.tensor(ref.pi, dtype=q.dtype)
    assert torch.equal(q[40], pi) and torch.equal(q[41], pi)


def test_backoff_is_exercised(corpus) -> None:
    """With min_count=2 some pairs are usable and some back off, so the comparison above covers both."""
    table = build(corpus, ngram=2, min_count=2)
    assert (table.bigram_df >= 2).any() and (table.bigram_df < 2).any()
    bigram_only = build(corpus, ngram=2, min_count=1).predict_distribution(*queries())
    assert not torch.allclose(table.predict_distribution(*queries()), bigram_only)


def test_bigram_lookup_misses_neighbouring_keys() -> None:
    """Pairs whose keys sit next to real keys in sorted order (or beyond both ends) must read as unseen."""
    gen = torch.Generator().manual_seed(2)
    ids, mask = random_rows(80, 16, 3, 50, gen)  # sparse pairs: most neighbours of a seen key are unseen
    corpus = (ids, mask, torch.randint(1, 5, (80,), generator=gen))
    table = build(corpus, ngram=2, min_count=1)
    ref = Reference(*corpus, L=4, ngram=2)
    seen = set(ref.bi)
    rows = []
    for a, b in sorted(seen)[:: max(1, len(seen) // 8)] + [min(seen), max(seen)]:
        for pair in ((a, b - 1), (a, b + 1), (a + 1, b)):
            if pair not in seen and min(pair) >= 3 and max(pair) < 50:
                rows.append([CLS, *pair, SEP])
    rows.append([CLS, 3, 3, SEP] if (3, 3) not in seen else [CLS, 49, 49, SEP])  # below/above every key
    assert len(rows) >= 8
    ids = torch.tensor(rows)
    mask = torch.ones_like(ids)
    keys = ids[:, 1] * 50 + ids[:, 2]
    slots = torch.searchsorted(table.bigram_keys, keys).clamp(max=len(table.bigram_keys) - 1)
    assert (table.bigram_keys[slots] != keys).all()  # none of the queries is stored
    q = table.predict_distribution(ids, mask)
    expected = torch.tensor([ref.distribution(r, [1] * 4, 1, 1.0) for r in rows], dtype=torch.float64)
    assert torch.allclose(q, expected, atol=1e-9, rtol=0)


def test_rows_are_batch_and_padding_invariant(corpus) -> None:
    table = build(corpus, ngram=2)
    ids, mask = queries()
    q = table.predict_distribution(ids, mask)
    layers = layers_from_distribution(q, 0.6)
    for i in range(0, len(ids), 7):
        n = int(mask[i].sum())
        alone = table.predict_distribution(ids[i : i + 1, :n], mask[i : i + 1, :n])
        assert torch.allclose(alone[0], q[i], atol=1e-12, rtol=0)
        assert layers_from_distribution(alone, 0.6)[0] == layers[i]


def test_unknown_options_raise(corpus) -> None:
    table = build(corpus)
    ids, mask = queries()
    with pytest.raises(ValueError, match="combine"):
        table.predict_distribution(ids, mask, combine="median-ish")
    with pytest.raises(ValueError, match="weighting"):
        table.predict_distribution(ids, mask, weighting="tf")
    with pytest.raises(ValueError, match="token ids"):
        table.predict_distribution(ids + 50, mask)


# ------------------------------------------------------------------------------------------------------------
# IDF: a rare marker token outvotes filler tokens present in every row
# ------------------------------------------------------------------------------------------------------------

FILLERS = list(range(3, 33))  # 30 tokens in every row
MARKER = 33
OTHERS = (34, 200)  # random tokens of hard rows


def synthetic(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Easy rows (20%): fillers + marker, exit 1. Hard rows: fillers + 5..15 random others, exit 6 (or 5).

    Returns ids (n, T), mask (n, T), exit layers (n,) and the easy-row mask (n,).
    """
    gen = torch.Generator().manual_seed(seed)
    T = 1 + len(FILLERS) + 15 + 1
    ids = torch.full((n, T), PAD)
    mask = torch.zeros(n, T, dtype=torch.long)
    easy = torch.rand(n, generator=gen) < 0.2
    layers = torch.where(torch.rand(n, generator=gen) < 0.9, 6, 5)
    layers[easy] = 1
    for i in range(n):  # data generation only; the table itself has no per-row loop
        # Fillers in a fixed order (shared boilerplate), so filler bigrams also occur in every row.
        n_others = int(torch.randint(5, 16, (1,), generator=gen))
        extra = [MARKER] if easy[i] else torch.randint(*OTHERS, (n_others,), generator=gen).tolist()
        row = [CLS, *FILLERS, *extra, SEP]
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    return ids, mask, layers, easy


@pytest.mark.parametrize("ngram", [1, 2])
def test_idf_lets_marker_token_dominate(ngram) -> None:
    ids, mask, layers, _ = synthetic(500, seed=0)
    table = ExitTable.build(ids, mask, layers, num_layers=6, vocab_size=200, special_ids=SPECIAL, ngram=ngram)
    test_ids, test_mask, _, easy = synthetic(200, seed=1)
    assert easy.any() and (~easy).any()
    predicted = table.predict_layers(test_ids, test_mask, tau=0.5)
    assert (predicted[easy] <= 2).all()
    assert (predicted[~easy] >= 5).all()
    # The fillers occur in every row, so their IDF weight is exactly 0.
    assert (table.unigram_df[FILLERS] == table.num_rows).all()
    # Without IDF the 30 fillers (each ~ pi) swamp the marker: marked rows no longer all exit early.
    unweighted = table.predict_layers(test_ids, test_mask, tau=0.5, weighting="none")
    assert not (unweighted[easy] <= 2).all()
    assert (unweighted[~easy] >= 5).all()


def test_unweighted_option_is_the_plain_mean(corpus) -> None:
    """weighting='none' (used above as the ablation) equals the reference with every key weighing 1."""
    table = build(corpus, ngram=2, min_count=2)
    ref = Reference(*corpus, L=4, ngram=2)
    ids, mask = queries()
    q = table.predict_distribution(ids, mask, weighting="none")
    rows = zip(ids.tolist(), mask.tolist())
    expected = torch.tensor([ref.distribution(r, m, 2, 1.0, idf=False) for r, m in rows], dtype=torch.float64)
    assert torch.allclose(q, expected, atol=1e-9, rtol=0)


# ------------------------------------------------------------------------------------------------------------
# From q to a layer
# ------------------------------------------------------------------------------------------------------------


def test_layers_from_distribution_quantile_and_snapping() -> None:
    q = torch.tensor(
        [
            [1.0, 0, 0, 0, 0, 0],
            [0, 0, 1.0, 0, 0, 0],
            [0.25, 0.25, 0.25, 0.25, 0, 0],
            [0, 0, 0, 0, 0.5, 0.5],
        ]
    )
    assert layers_from_distribution(q, 0.5).tolist() == [1, 3, 2, 5]
    assert layers_from_distribution(q, 0.5, [2, 4, 6]).tolist() == [2, 4, 2, 6]
    assert layers_from_distribution(q, 0.75, [1, 3]).tolist() == [1, 3, 3, 6]  # L is always an exit
    assert layers_from_distribution(q, 0.76).tolist() == [1, 3, 4, 6]


def test_tau_ends_are_exact() -> None:
    q = torch.tensor([[1.0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 1.0], [0.3, 0.3, 0.3999999, 0, 0, 0]])
    assert layers_from_distribution(q, 0.0).tolist() == [1, 1, 1]
    assert layers_from_distribution(q, 0.0, [2, 4, 6]).tolist() == [2, 2, 2]
    assert layers_from_distribution(q, 0.0, [4, 6]).tolist() == [4, 4, 4]
    assert layers_from_distribution(q, 1.0).tolist() == [6, 6, 6]  # even where the cdf hits 1 early
    assert layers_from_distribution(q, 1.0, [2, 4, 6]).tolist() == [6, 6, 6]
    # Float shortfall: the cdf of the last row never reaches tau; the layer stays within 1..L.
    assert layers_from_distribution(q, 0.99999999).tolist() == [1, 6, 6]


@pytest.mark.parametrize("tau", [-0.1, 1.0001, float("nan")])
def test_tau_outside_unit_interval_raises(corpus, tau) -> None:
    with pytest.raises(ValueError, match="tau"):
        layers_from_distribution(torch.full((2, 4), 0.25), tau)
    with pytest.raises(ValueError, match="tau"):
        build(corpus).predict_layers(*queries(), tau=tau)


def test_bad_exit_layers_raise() -> None:
    with pytest.raises(ValueError, match="exit layers"):
        layers_from_distribution(torch.full((2, 4), 0.25), 0.5, [0, 4])
    with pytest.raises(ValueError, match="exit layers"):
        layers_from_distribution(torch.full((2, 4), 0.25), 0.5, [2, 5])


def test_predict_layers_matches_distribution(corpus) -> None:
    table = build(corpus, ngram=2)
    ids, mask = queries()
    q = table.predict_distribution(ids, mask)
    for tau in (0.0, 0.3, 0.5, 0.9, 1.0):
        layers = table.predict_layers(ids, mask, tau, [2, 3, 4])
        assert layers.dtype == torch.long and layers.shape == (len(ids),)
        assert torch.equal(layers, layers_from_distribution(q, tau, [2, 3, 4]))


# ------------------------------------------------------------------------------------------------------------
# Save, load, info
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ngram", [1, 2])
def test_save_load_round_trip(corpus, tmp_path, ngram) -> None:
    table = build(corpus, ngram=ngram, min_count=3, smoothing=0.5)
    path = tmp_path / "exit_table.safetensors"
    table.save(path)
    loaded = ExitTable.load(path)
    assert loaded.params() == table.params()
    assert loaded.params()["special_ids"] == list(SPECIAL) and loaded.params()["min_count"] == 3
    for name, tensor in table.tensors().items():
        assert torch.equal(loaded.tensors()[name], tensor), name
    ids, mask = queries()
    assert torch.equal(loaded.predict_distribution(ids, mask), table.predict_distribution(ids, mask))
    assert torch.equal(loaded.predict_layers(ids, mask, 0.5), table.predict_layers(ids, mask, 0.5))
    moved = table.to("cpu")
    assert torch.equal(moved.predict_distribution(ids, mask), table.predict_distribution(ids, mask))


def test_load_rejects_other_files(tmp_path) -> None:
    path = tmp_path / "weights.safetensors"
    save_file({"x": torch.zeros(2)}, str(path))
    with pytest.raises(ValueError, match="not a geep exit table"):
        ExitTable.load(path)


def test_params_and_summary(corpus) -> None:
    import json

    table = build(corpus, ngram=2, min_count=2)
    params = json.loads(json.dumps(table.params()))
    assert params == {
        "ngram": 2,
        "min_count": 2,
        "smoothing": 1.0,
        "combine": "mean",
        "num_layers": 4,
        "vocab_size": 50,
        "num_rows": 80,
        "special_ids": [0, 1, 2],
    }
    ref = Reference(*corpus, L=4, ngram=2)
    summary = table.summary()
    assert summary["num_rows"] == 80
    assert summary["unigram_keys"] == len(ref.uni)
    assert summary["bigram_keys"] == len(ref.bi)
    assert summary["usable_bigram_keys"] == sum(sum(c) >= 2 for c in ref.bi.values())
    assert summary["exit_histogram"] == {l + 1: n for l, n in enumerate(ref.hist)}


@pytest.mark.parametrize("combine", ["geometric", "vote"])
@pytest.mark.parametrize("ngram", [1, 2])
def test_other_combiners_match_reference(corpus, combine, ngram) -> None:
    table = build(corpus, ngram=ngram, min_count=2, smoothing=1.0)
    ref = Reference(*corpus, L=4, ngram=ngram)
    ids, mask = queries()
    q = table.predict_distribution(ids, mask, combine=combine)
    expected = torch.tensor([ref.distribution(r, m, 2, 1.0, combine=combine)
                             for r, m in zip(ids.tolist(), mask.tolist())], dtype=torch.float64)
    assert torch.allclose(q, expected, atol=1e-9, rtol=0)


@pytest.mark.parametrize("combine", ["geometric", "vote"])
def test_other_combiners_also_let_the_marker_dominate(combine) -> None:
    ids, mask, layers, _ = synthetic(500, seed=0)
    table = ExitTable.build(ids, mask, layers, num_layers=6, vocab_size=200, special_ids=SPECIAL, combine=combine)
    test_ids, test_mask, _, easy = synthetic(200, seed=1)
    predicted = table.predict_layers(test_ids, test_mask, tau=0.5)
    assert (predicted[easy] <= 2).all() and (predicted[~easy] >= 5).all()
