"""The window, subsampling and noise distributions, checked statistically on generated data."""

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from tasks.negatives import NegativeSampler, noise_distribution
from tasks.pairs import count_pairs, skipgram_pairs, window_pairs
from tasks.seeding import Stream, key, rng
from tasks.subsample import is_heldout, keep_probabilities, subsample, vocabulary_ids


def test_keep_probability_rules() -> None:
    counts = np.array([1000, 100, 10, 1])
    f = counts / counts.sum()
    t = 1e-2
    expected = np.minimum(1, (np.sqrt(f / t) + 1) * t / f)
    assert np.allclose(keep_probabilities(counts, t), expected)
    assert np.allclose(keep_probabilities(counts, t, "paper"), np.minimum(1, np.sqrt(t / f)))
    assert keep_probabilities(counts, t)[-1] == 1.0


def test_subsampling_keeps_each_word_at_its_rate() -> None:
    rng = np.random.default_rng(7)
    counts = np.array([40_000, 20_000, 5_000, 500])
    words = pa.array(["de", "la", "casa", "rucio"])
    stream = rng.permutation(np.repeat(np.arange(4), counts))
    tokens = [words[int(i)].as_py() for i in stream] + ["unknown"] * 100
    batch = pa.record_batch(
        [pa.array([0, 1], pa.int64()), pa.array([tokens[:30_000], tokens[30_000:]])],
        names=["sentence_id", "tokens"],
    )
    keep = keep_probabilities(counts, 1e-2)
    out = pa.Table.from_batches(list(subsample([batch], words, keep, np.random.default_rng(1))))
    kept = np.bincount(out["ids"].combine_chunks().flatten().to_numpy(), minlength=4)
    expected = counts * keep
    sigma = np.sqrt(counts * keep * (1 - keep)) + 1e-9
    assert np.all(np.abs(kept - expected) < 5 * sigma), (kept, expected)
    assert kept[3] == counts[3]  # rare words are always kept


def test_subsampling_is_seeded() -> None:
    batch = pa.record_batch(
        [pa.array([0], pa.int64()), pa.array([["a", "b"] * 500])], names=["sentence_id", "tokens"]
    )
    keep = np.array([0.5, 0.5])
    runs = [
        pa.Table.from_batches(list(subsample([batch], pa.array(["a", "b"]), keep, rng)))
        for rng in (np.random.default_rng(3), np.random.default_rng(3))
    ]
    assert runs[0].equals(runs[1])


def test_sentences_emptied_by_subsampling_are_dropped() -> None:
    """A sentence left with no word (every word dropped, or none in the vocabulary) is not
    written; the others keep their ids and kept words."""
    tokens = [["a", "b"], ["b", "b"], ["fuera"], ["b", "a", "fuera"], []]
    batch = pa.record_batch(
        [pa.array(range(10, 15), pa.int64()), pa.array(tokens, pa.list_(pa.string()))],
        names=["sentence_id", "tokens"],
    )
    keep = np.array([1.0, 0.0])  # "a" always kept, "b" never
    out = pa.Table.from_batches(
        list(subsample([batch], pa.array(["a", "b"]), keep, np.random.default_rng(0)))
    )
    assert out["sentence_id"].to_pylist() == [10, 13]
    assert out["ids"].to_pylist() == [[0], [0]]


def test_every_shard_draws_its_own_random_stream() -> None:
    """Same seed, epoch and stream, another shard: other numbers (and the same ones again for
    the same shard)."""
    draws = [rng(1, 0, Stream.SUBSAMPLE, shard).random(8) for shard in range(4)]
    assert np.array_equal(draws[2], rng(1, 0, Stream.SUBSAMPLE, 2).random(8))
    assert len({tuple(d) for d in draws}) == 4
    assert len({key(1, 0, Stream.NEGATIVES, shard) for shard in range(4)}) == 4


def test_every_block_of_an_epoch_gets_its_own_device_seed() -> None:
    """The GPU path seeds a block's shuffle and negatives by the block's first row: no two
    blocks of an epoch (nor one block in two epochs) share a seed."""
    sampler = NegativeSampler(noise_distribution(np.array([5, 3, 1])), k=3, seed=9)
    firsts = range(0, 10 * 4096, 4096)
    seeds = [sampler.block_seed(0, first) for first in firsts]
    assert len(set(seeds)) == len(seeds)
    assert seeds == [sampler.block_seed(0, first) for first in firsts]
    assert sampler.block_seed(1, 0) not in seeds
    assert all(0 <= seed < 2**64 for seed in seeds)


def test_window_distances_follow_the_dynamic_window() -> None:
    n, window = 200_000, 5
    ids = np.arange(n, dtype=np.int32)
    center, context = window_pairs(ids, np.array([n]), window, np.random.default_rng(0))
    distance = np.abs(context.astype(np.int64) - center)
    observed = np.bincount(distance, minlength=window + 2)[1:]
    # P(context at distance d) = P(b >= d) = (window - d + 1) / window, on both sides.
    expected = 2 * n * (window - np.arange(1, window + 1) + 1) / window
    assert observed[window] == 0
    assert np.allclose(observed[:window], expected, rtol=0.02), (observed, expected)
    # one b per center: as many contexts on the left as on the right (away from the ends)
    interior = (center >= window) & (center < n - window)
    left = np.bincount(center[interior & (context < center)], minlength=n)
    right = np.bincount(center[interior & (context > center)], minlength=n)
    assert np.array_equal(left, right)


def test_pairs_stay_inside_sentences_and_follow_text_order() -> None:
    ids = pa.array([[1, 2, 3], [4, 5]], pa.list_(pa.int32()))
    batch = pa.record_batch([pa.array([0, 1], pa.int64()), ids], names=["sentence_id", "ids"])
    table = pa.Table.from_batches(list(skipgram_pairs([batch], 2, np.random.default_rng(0))))
    pairs = list(zip(table["center"].to_pylist(), table["context"].to_pylist(), strict=True))
    assert all((c <= 3) == (o <= 3) for c, o in pairs)
    assert [c for c, _ in pairs] == sorted(c for c, _ in pairs)
    assert {(4, 5), (5, 4)} <= set(pairs)


def test_negatives_follow_count_to_the_three_quarters() -> None:
    counts = np.array([10_000, 1_000, 100, 10, 1])
    p = noise_distribution(counts)
    assert np.allclose(p, counts**0.75 / (counts**0.75).sum())
    sampler = NegativeSampler(p, k=5, seed=1)
    draws = sampler.draw(0, 0, 200_000)
    assert draws.shape == (200_000, 5) and draws.dtype == np.int32
    observed = np.bincount(draws.ravel(), minlength=5) / draws.size
    sigma = np.sqrt(p * (1 - p) / draws.size)
    assert np.all(np.abs(observed - p) < 5 * sigma), (observed, p)


def test_negatives_are_reproduced_by_seed_and_epoch() -> None:
    sampler = NegativeSampler(noise_distribution(np.array([5, 3, 1])), k=3, seed=9)
    first = sampler.draw(2, 0, 100)
    assert np.array_equal(first, sampler.draw(2, 0, 100))
    assert np.array_equal(first[40:], sampler.draw(2, 40, 60))  # per row, not per call
    assert not np.array_equal(first, sampler.draw(3, 0, 100))
    assert not np.array_equal(first, NegativeSampler(sampler.prob, 3, seed=8).draw(2, 0, 100))


def test_held_out_sentences_are_a_share_chosen_by_id() -> None:
    ids = (np.arange(200_000, dtype=np.int64) % 50_000) + (np.arange(200_000) // 50_000 << 32)
    held = is_heldout(ids, 0.01)
    assert abs(held.mean() - 0.01) < 5 * np.sqrt(0.01 * 0.99 / len(ids))
    assert np.array_equal(held[:777], is_heldout(ids[:777], 0.01))  # per id, not batch
    assert not np.array_equal(held[:50_000], held[50_000:100_000])  # the shard counts too
    assert (is_heldout(ids, 0.02) >= held).all() and is_heldout(ids, 0.02).sum() > held.sum()
    assert not is_heldout(ids, 0.0).any()


def sentence_batches(rng: np.random.Generator, words: list[str], n: int) -> list[pa.RecordBatch]:
    """`n` batches of random sentences of `words` and a word outside them."""
    batches = []
    for b in range(n):
        lengths = rng.integers(1, 30, 50)
        tokens = [[rng.choice([*words, "fuera"]) for _ in range(k)] for k in lengths]
        ids = pa.array(range(b * 50, (b + 1) * 50), pa.int64())
        batches.append(pa.record_batch([ids, pa.array(tokens)], names=["sentence_id", "tokens"]))
    return batches


def test_vocabulary_ids_look_all_batches_up_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Arrow hashes the vocabulary for each lookup: once per call, not once per batch."""
    words = ["de", "la", "casa", "rucio"]
    batches = sentence_batches(np.random.default_rng(5), words, 4)
    lookups = []
    index_in = pc.index_in
    monkeypatch.setattr(pc, "index_in", lambda *a, **k: lookups.append(1) or index_in(*a, **k))
    out = list(vocabulary_ids(batches, pa.array(words)))
    assert len(lookups) == 1 and len(out) == len(batches)
    for batch, (sentence_ids, ids, lengths) in zip(batches, out, strict=True):
        tokens = batch.column("tokens")
        expected = [words.index(w) if w in words else -1 for w in tokens.flatten().to_pylist()]
        assert ids.tolist() == expected and ids.dtype == np.int32
        assert lengths.tolist() == [len(s) for s in tokens.to_pylist()]
        assert sentence_ids.equals(batch.column("sentence_id"))
    assert list(vocabulary_ids([], pa.array(words))) == []


def test_count_pairs_counts_what_skipgram_pairs_makes() -> None:
    rng = np.random.default_rng(2)
    lengths = [rng.integers(1, 40, 300) for _ in range(3)]
    batches = [
        pa.record_batch(
            [pa.array(range(len(k)), pa.int64()), pa.array([list(range(n)) for n in k])],
            names=["sentence_id", "ids"],
        )
        for k in lengths
    ]
    made = sum(b.num_rows for b in skipgram_pairs(batches, 5, np.random.default_rng(9)))
    assert count_pairs(batches, 5, np.random.default_rng(9)) == made > 0
