"""Caption text: tokenising and the vocabulary (words <-> integer ids).

Tokens are lowercase alphabetic words (``"A plane, parked."`` -> ``["a", "plane", "parked"]``).
Id 0 is padding, 1 an out-of-vocabulary word, 2 and 3 start and end a caption; the training
words that occur at least ``min_count`` times follow, most frequent first.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np

PAD, UNK, START, END = "<pad>", "<unk>", "<start>", "<end>"
SPECIALS = (PAD, UNK, START, END)
_WORD = re.compile(r"[a-z]+")


def tokenize(text: str) -> list[str]:
    """Lowercase alphabetic words of ``text``.

    >>> tokenize("Many planes are parked, next to a long building .")
    ['many', 'planes', 'are', 'parked', 'next', 'to', 'a', 'long', 'building']
    """
    return _WORD.findall(text.lower())


class Vocabulary:
    """Words and their ids; ``tokens[i]`` is the word of id ``i`` (the first four are special).

    >>> vocab = Vocabulary.build(["a plane", "a ship"], min_count=2)
    >>> vocab.tokens
    ['<pad>', '<unk>', '<start>', '<end>', 'a']
    >>> vocab.encode("a plane", max_length=6).tolist()
    [2, 4, 1, 3, 0, 0]
    >>> vocab.decode([2, 4, 1, 3, 0])
    'a <unk>'
    """

    def __init__(self, tokens: Sequence[str]):
        tokens = list(tokens)
        if tuple(tokens[:4]) != SPECIALS:
            raise ValueError(f"a vocabulary starts with {SPECIALS}, got {tokens[:4]}")
        if len(set(tokens)) != len(tokens):
            raise ValueError("a vocabulary has no repeated tokens")
        self.tokens = tokens
        self.index = {t: i for i, t in enumerate(tokens)}

    @classmethod
    def build(cls, captions: Iterable[str], min_count: int = 5) -> Vocabulary:
        """The words of ``captions`` that occur at least ``min_count`` times."""
        if min_count < 1:
            raise ValueError(f"min_count must be 1 or more, got {min_count}")
        counts = Counter(w for c in captions for w in tokenize(c))
        words = sorted((w for w, n in counts.items() if n >= min_count),
                       key=lambda w: (-counts[w], w))
        return cls([*SPECIALS, *words])

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, caption: str, max_length: int) -> np.ndarray:
        """``<start> words <end>`` as ids, cut to ``max_length`` (keeping ``<end>``), padded."""
        if max_length < 3:
            raise ValueError(f"max_length must be 3 or more, got {max_length}")
        ids = [self.index.get(w, 1) for w in tokenize(caption)][:max_length - 2]
        out = np.zeros(max_length, dtype=np.int32)
        out[:len(ids) + 2] = [2, *ids, 3]
        return out

    def decode(self, ids: Iterable[int]) -> str:
        """The words of ``ids`` up to ``<end>``, without the special tokens except ``<unk>``."""
        words = []
        for i in ids:
            i = int(i)
            if i == 3:
                break
            if i in (0, 2):
                continue
            words.append(self.tokens[i] if 0 <= i < len(self.tokens) else UNK)
        return " ".join(words)
