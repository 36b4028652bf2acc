"""Train a CLIP-compatible BPE tokenizer offline, from a list of sentences.

Real checkpoints ship OpenAI's CLIP vocabulary; tests and the offline demo cannot download it, so they train a small
vocabulary with the same normalisation (NFC, collapsed spaces, lower case), the same pre-tokenisation (CLIP's regex
then byte-level), the same `</w>` end-of-word suffix and the same specials (`<|startoftext|>`, `<|endoftext|>`,
padding with `<|endoftext|>`). The result is a regular transformers `CLIPTokenizer` (backed by the `tokenizers` library)
that saves and loads with `save_pretrained` / `AutoTokenizer`. The same corpus always gives the same tokenizer.
"""

from collections import Counter
from collections.abc import Iterable

from tokenizers.pre_tokenizers import ByteLevel
from transformers import CLIPTokenizer

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
END_OF_WORD = "</w>"


def build_clip_tokenizer(
    texts: Iterable[str],
    vocab_size: int = 1000,
    model_max_length: int = 17,
    min_frequency: int = 1,
) -> CLIPTokenizer:
    """
    Train a CLIP-style byte-level BPE tokenizer on `texts` and wrap it as a transformers `CLIPTokenizer`.

    Args:
        texts: sentences to learn the merges from (e.g. every expression of a dataset).
        vocab_size: size of the vocabulary, including the 2 specials and the 256 byte symbols, each also with
            `</w>` (514 tokens before any merge); learning stops earlier when the corpus has no more merges.
        model_max_length: default truncation/padding length, with start and end tokens (UniRES: 17).
        min_frequency: minimum pair frequency for a merge.

    Every byte is in the vocabulary both inside and at the end of a word, so no text maps to the unknown token.
    """
    texts = [str(text) for text in texts]
    if not texts:
        raise ValueError("build_clip_tokenizer needs at least one sentence in `texts`")
    # CLIP's own normaliser and pre-tokeniser (from an empty CLIPTokenizer) split the corpus into byte-level words,
    # exactly as they will be split at encoding time.
    template = CLIPTokenizer().backend_tokenizer
    word_counts = Counter()
    for text in texts:
        normalized = template.normalizer.normalize_str(text)
        word_counts.update(word for word, _ in template.pre_tokenizer.pre_tokenize_str(normalized))

    alphabet = sorted(ByteLevel.alphabet())
    vocab = {BOS_TOKEN: 0, EOS_TOKEN: 1}
    for symbol in alphabet:
        vocab[symbol] = len(vocab)
    for symbol in alphabet:
        vocab[symbol + END_OF_WORD] = len(vocab)
    merges = _learn_merges(word_counts, max(0, vocab_size - len(vocab)), min_frequency)
    for left, right in merges:
        vocab.setdefault(left + right, len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=model_max_length)


def _learn_merges(word_counts: Counter, num_merges: int, min_frequency: int) -> list[tuple[str, str]]:
    """
    Byte-pair merges learnt greedily from word counts, ties broken by the pair itself.

    Learnt here rather than with `tokenizers.trainers.BpeTrainer`, whose tie-breaking depends on hash order and so
    changes from one process to the next: the same corpus must always give the same tokenizer.
    """
    words = [[*word[:-1], word[-1] + END_OF_WORD] for word in word_counts]
    counts = list(word_counts.values())
    merges = []
    for _ in range(num_merges):
        pairs = Counter()
        for symbols, count in zip(words, counts):
            for pair in zip(symbols, symbols[1:]):
                pairs[pair] += count
        if not pairs:
            break
        best = min(pairs.items(), key=lambda item: (-item[1], item[0]))
        if best[1] < min_frequency:
            break
        (left, right), merged = best[0], best[0][0] + best[0][1]
        merges.append((left, right))
        for symbols in words:
            index = 0
            while index < len(symbols) - 1:
                if symbols[index] == left and symbols[index + 1] == right:
                    symbols[index : index + 2] = [merged]
                index += 1
    return merges


__all__ = ["build_clip_tokenizer"]
