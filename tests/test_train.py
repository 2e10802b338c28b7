import numpy as np
import pyarrow as pa

from storage.schemas import PAIRS
from tasks.negatives import NegativeSampler
from tasks.train import pair_batches, pair_blocks, to_vectors_table


def chunks() -> list[pa.RecordBatch]:
    center = np.arange(1000, dtype=np.int32)
    context = (center + 1) % 1000
    return [
        pa.record_batch(
            [pa.array(center[s : s + 300]), pa.array(context[s : s + 300])], schema=PAIRS
        )
        for s in range(0, 1000, 300)
    ]


def test_batches_cover_every_pair_once_with_row_aligned_negatives() -> None:
    sampler = NegativeSampler(np.full(1000, 1 / 1000), k=4, seed=5)
    batches = list(pair_batches(pair_blocks(iter(chunks())), sampler, 0, batch_size=128, seed=5))
    center = np.concatenate([b[0] for b in batches])
    context = np.concatenate([b[1] for b in batches])
    negatives = np.concatenate([b[2] for b in batches])
    assert max(len(b[0]) for b in batches) == 128
    assert np.array_equal(np.sort(center), np.arange(1000))  # every pair once, shuffled
    assert not np.array_equal(center, np.arange(1000))
    assert np.array_equal(context, (center + 1) % 1000)
    # the negatives of file row r are the sampler's draws for row r of the epoch: reproducible
    assert np.array_equal(negatives, sampler.draw(0, 0, 1000)[center])
    again = list(pair_batches(pair_blocks(iter(chunks())), sampler, 0, batch_size=128, seed=5))
    assert all(np.array_equal(a[2], b[2]) for a, b in zip(batches, again, strict=True))


def test_vectors_table_round_trip() -> None:
    vectors = np.arange(6, dtype=np.float32).reshape(3, 2)
    table = to_vectors_table(pa.array(["a", "b", "c"]), vectors)
    assert table.schema.field("vector").type == pa.list_(pa.float32(), 2)
    assert table["vector"].to_pylist() == vectors.tolist()
