from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import given, settings
from hypothesis import strategies as st

import tasks.tokenize as tokenize_module
from tasks.download import download
from tasks.tokenize import (
    MAX_SENTENCE_WORDS,
    SHARD_BITS,
    WORD,
    split_sentences,
    tokenize,
    tokenize_task,
)
from tests.data import QUIJOTE


def test_spanish_words_lowercased_punctuation_and_digits_dropped() -> None:
    text = "¡Hola, Señor! ¿Qué tal «el niño» en 1605? Pingüino_azul; ÁRBOL ¼kg.\n"
    assert list(split_sentences(text)) == [
        ["hola", "señor"],
        ["qué", "tal", "el", "niño", "en"],
        ["pingüino", "azul", "árbol", "kg"],
    ]


def test_line_wraps_do_not_break_sentences_but_paragraphs_do() -> None:
    text = "En un lugar de la Mancha,\nde cuyo nombre\n\nno quiero acordarme"
    assert list(split_sentences(text)) == [
        ["en", "un", "lugar", "de", "la", "mancha", "de", "cuyo", "nombre"],
        ["no", "quiero", "acordarme"],
    ]


def test_batches_number_sentences_across_documents() -> None:
    batches = list(tokenize(["Uno. Dos.", "Tres. Cuatro. Cinco."], batch_rows=2))
    table = pa.Table.from_batches(batches)
    assert [b.num_rows for b in batches] == [2, 2, 1]
    assert table["sentence_id"].to_pylist() == [0, 1, 2, 3, 4]
    assert table["tokens"].to_pylist() == [["uno"], ["dos"], ["tres"], ["cuatro"], ["cinco"]]


def test_quijote_opening_line() -> None:
    text = QUIJOTE.read_text(encoding="utf-8-sig")
    start = text.index("En un lugar de la Mancha")
    first = next(split_sentences(text[start : start + 400]))
    assert first[:8] == ["en", "un", "lugar", "de", "la", "mancha", "de", "cuyo"]


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=400))
def test_any_text_gives_lowercase_letter_words(text: str) -> None:
    sentences = list(split_sentences(text))
    words = [word for sentence in sentences for word in sentence]
    assert all(sentence for sentence in sentences)
    assert all(WORD.fullmatch(word) and word == word.lower() for word in words)
    # tokenizing the words again, one sentence per line pair, gives the same sentences
    again = "\n\n".join(" ".join(sentence) for sentence in sentences)
    assert list(split_sentences(again)) == sentences


def test_a_long_sentence_is_cut_into_pieces_of_max_words() -> None:
    words = [f"p{'a' * (i % 7)}" for i in range(2_500)]
    pieces = list(split_sentences(" ".join(words) + ". Fin."))
    assert [len(piece) for piece in pieces] == [MAX_SENTENCE_WORDS, MAX_SENTENCE_WORDS, 500, 1]
    assert [w for piece in pieces[:3] for w in piece] == words


def test_batches_are_bounded_by_words_whatever_the_line_length() -> None:
    line = " ".join(["molino", "gigante", "viento"] * 20_000)  # 60,000 words, no full stop
    batches = list(tokenize([line, "Uno. Dos."], batch_tokens=5_000))
    sizes = [len(batch.column("tokens").flatten()) for batch in batches]
    assert sum(sizes) == 60_002 and max(sizes) <= 5_000
    lengths = [len(tokens) for b in batches for tokens in b.column("tokens").to_pylist()]
    assert lengths == [MAX_SENTENCE_WORDS] * 60 + [1, 1]


def test_streamed_and_whole_sentences_give_the_same_words(monkeypatch) -> None:
    quijote = QUIJOTE.read_text(encoding="utf-8-sig")[:300_000]
    text = quijote + ". " + " ".join(["molino"] * 2_500)  # and a sentence of 2,500 words
    whole = list(split_sentences(text))
    monkeypatch.setattr(tokenize_module, "STREAM_CHARS", 0)  # every sentence word by word
    assert list(split_sentences(text)) == whole
    assert [len(piece) for piece in whole[-3:]] == [MAX_SENTENCE_WORDS, MAX_SENTENCE_WORDS, 500]


def test_sentence_ids_are_unique_across_documents(home: Path, tmp_path: Path) -> None:
    """Shard n numbers its sentences from n << SHARD_BITS: no id is in two shards, as the
    held-out split (a hash of the id) needs."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i, text in enumerate(["Uno. Dos. Tres.", "Cuatro. Cinco.", "Seis. Siete. Ocho."]):
        (corpus / f"parte-{i}.txt").write_text(text + "\n", encoding="utf-8")
    documents = download([str(corpus)])
    sentences = [tokenize_task(documents, shard) for shard in range(3)]
    ids = [pq.read_table(s.file("sentences.parquet"))["sentence_id"].to_pylist() for s in sentences]
    assert [len(shard) for shard in ids] == [3, 2, 3]
    for shard, shard_ids in enumerate(ids):
        assert shard_ids == [(shard << SHARD_BITS) + i for i in range(len(shard_ids))]
    assert len({i for shard_ids in ids for i in shard_ids}) == 8
