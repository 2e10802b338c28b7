"""Vocab stage: word counts computed by DuckDB over the tokens, `min_count` and `max_vocab`
applied; ids are ranks by count (ties broken by word), so id 0 is the most frequent word."""

from __future__ import annotations

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds

from quijote.errors import QuijoteError
from quijote.params import Params
from storage.files import write_parquet
from storage.schemas import VOCAB
from storage.stages import StageOutput, run_stage
from tasks.stage_task import stage_task

VERSION = 1

_COUNT_SQL = """
SELECT (row_number() OVER (ORDER BY count DESC, word) - 1)::INTEGER AS id, word, count
FROM (
    SELECT word, count(*)::BIGINT AS count
    FROM (SELECT unnest(tokens) AS word FROM sentences)
    GROUP BY word
    HAVING count(*) >= $min_count
)
QUALIFY $max_vocab = 0 OR id < $max_vocab
ORDER BY id
"""


def build_vocab(sentences: pa.Table | ds.Dataset, min_count: int, max_vocab: int = 0) -> pa.Table:
    """Count every token with DuckDB (memory bounded by the number of distinct words) and keep
    the words seen at least `min_count` times, at most `max_vocab` of them (0 = all)."""
    with duckdb.connect() as con:
        con.register("sentences", sentences)
        table = con.execute(
            _COUNT_SQL, {"min_count": min_count, "max_vocab": max_vocab}
        ).to_arrow_table()
        if table.num_rows == 0:
            tokens = con.execute("SELECT sum(len(tokens)) FROM sentences").fetchone()[0] or 0
            raise QuijoteError(
                f"the vocabulary is empty: no word occurs {min_count} times or more in the corpus "
                f"({tokens} tokens); lower min_count or use a larger corpus"
            )
    return table.cast(VOCAB)


@stage_task("vocab")
def vocab_task(sentences: list[StageOutput], params: Params) -> StageOutput:
    """Count the tokens of every shard's sentences."""

    def build(out):
        files = [str(shard.file("sentences.parquet")) for shard in sentences]
        table = build_vocab(ds.dataset(files), params.min_count, params.max_vocab)
        write_parquet(out / "vocab.parquet", VOCAB, table.to_batches())
        return {"words": table.num_rows, "kept_tokens": int(pa.compute.sum(table["count"]).as_py())}

    settings = params.subset("min_count", "max_vocab")
    return run_stage("vocab", VERSION, settings, [shard.key for shard in sentences], build)
