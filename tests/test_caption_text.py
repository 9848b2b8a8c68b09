"""Caption text: tokens and the vocabulary."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ecgcap.captioning.text import SPECIALS, Vocabulary, tokenize


def test_tokenize_lowercases_and_keeps_alphabetic_words():
    assert tokenize("Many planes are parked, next to 2 long buildings.") == [
        "many", "planes", "are", "parked", "next", "to", "long", "buildings"]
    assert tokenize("") == []
    assert tokenize("It's a caf\u00e9 .") == ["it", "s", "a", "caf"]


def test_vocabulary_counts_words_and_puts_specials_first():
    vocab = Vocabulary.build(["a plane", "a plane", "a ship"], min_count=2)
    assert vocab.tokens == [*SPECIALS, "a", "plane"]  # most frequent first
    assert len(Vocabulary.build(["a plane", "a ship"], min_count=1)) == 7


def test_encode_adds_start_end_pads_and_maps_unknown_words():
    vocab = Vocabulary([*SPECIALS, "a", "plane"])
    assert vocab.encode("A plane, a SHIP", 8).tolist() == [2, 4, 5, 4, 1, 3, 0, 0]
    # too long: cut, but always ends with <end>
    assert vocab.encode("a plane a plane a plane", 5).tolist() == [2, 4, 5, 4, 3]
    assert vocab.decode([2, 4, 1, 3, 5, 5]) == "a <unk>"


def test_bad_vocabularies_and_sizes_are_refused():
    with pytest.raises(ValueError, match="starts with"):
        Vocabulary(["a", "b"])
    with pytest.raises(ValueError, match="repeated"):
        Vocabulary([*SPECIALS, "a", "a"])
    with pytest.raises(ValueError, match="min_count"):
        Vocabulary.build(["a"], min_count=0)
    with pytest.raises(ValueError, match="max_length"):
        Vocabulary([*SPECIALS]).encode("a", 2)


@given(st.lists(st.sampled_from(["many", "green", "trees", "are", "near", "a", "river"]),
                max_size=30), st.integers(3, 40))
def test_decode_inverts_encode_for_known_words(words, max_length):
    vocab = Vocabulary.build(["many green trees are near a river"], min_count=1)
    ids = vocab.encode(" ".join(words), max_length)
    assert len(ids) == max_length and ids[0] == 2 and 3 in ids
    assert vocab.decode(ids) == " ".join(words[:max_length - 2])
