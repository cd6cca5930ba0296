"""Pack documents into fixed-length training windows, each document followed by the boundary token.

    table = pack(docs, offset=1, context_length=512, windows=64)    # pyarrow Table, one row per window

Documents are laid back to back in the order given (so an ordering transform decides what shares a window, as In-
Context Pretraining intends) and the stream is cut every `context_length` tokens; a document may straddle two
windows. Columns: `input_ids` (context_length int32, ids shifted by the source's vocabulary `offset`),
`doc_ids` (ids of the documents each window touches, in order), `doc_starts` (position in the window where each
of them begins; -1 when it began in an earlier window) and `doc_groups` (latent group of each touched document, -1 if none).
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

BOUNDARY = 0
"""Token id that ends every document (the mixture vocabulary's id 0, `<|endoftext|>`)."""


def stream_tokens(docs) -> int:
    """Tokens the documents take in the stream (one boundary token each)."""
    return int(sum(len(d) + 1 for d in docs.tokens))


def pack(docs, offset: int, context_length: int, windows: int) -> pa.Table:
    """The first `windows` windows of `docs` packed; ValueError if the documents hold too few tokens."""
    need = windows * context_length
    if stream_tokens(docs) < need:
        raise ValueError(f"documents hold {stream_tokens(docs)} tokens, {need} needed")
    lengths = np.array([len(d) + 1 for d in docs.tokens], np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    used = int(np.searchsorted(starts, need, side="left"))  # documents that begin inside the windows
    stream = np.empty(int(starts[used - 1] + lengths[used - 1]), np.int32)
    for d, s in zip(docs.tokens[:used], starts[:used]):
        stream[s : s + len(d)] = d + offset
        stream[s + len(d)] = BOUNDARY
    window_start = np.arange(windows, dtype=np.int64) * context_length
    first = np.searchsorted(starts[:used], window_start, side="right") - 1  # document covering position 0
    last = np.searchsorted(starts[:used], window_start + context_length, side="left")  # exclusive
    touched = np.concatenate([np.arange(a, b) for a, b in zip(first, last)])
    list_offsets = pa.array(np.concatenate([[0], np.cumsum(last - first)]).astype(np.int32))
    in_window = starts[touched] - np.repeat(window_start, last - first)
    return pa.table({
        "input_ids": pa.FixedSizeListArray.from_arrays(pa.array(stream[:need]), context_length),
        "doc_ids": pa.ListArray.from_arrays(list_offsets, pa.array(docs.ids[touched])),
        "doc_starts": pa.ListArray.from_arrays(list_offsets, pa.array(np.maximum(in_window, -1).astype(np.int32))),
        "doc_groups": pa.ListArray.from_arrays(list_offsets, pa.array(docs.groups[touched])),
    })
