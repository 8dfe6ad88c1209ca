"""The runtime's batching logic (padding, length grouping, device choice), independent of any model."""

import numpy as np
import pytest

from streamsense.models.runtime import choose_device, length_groups, pad, softmax


def test_pad_to_longest_member_only():
    ids, mask = pad([[101, 5, 102], [101, 102], [101, 7, 8, 9, 102]])
    assert ids.shape == mask.shape == (3, 5)
    assert ids.dtype == mask.dtype == np.int64
    assert ids[1].tolist() == [101, 102, 0, 0, 0]
    assert mask.sum(axis=1).tolist() == [3, 2, 5]


def test_length_groups_cover_every_index_once_and_sort_by_length():
    lengths = [9, 1, 5, 3, 7, 2, 8]
    groups = length_groups(lengths, 3)
    flat = [i for g in groups for i in g]
    assert sorted(flat) == list(range(len(lengths)))
    assert [len(g) for g in groups] == [3, 3, 1]
    assert [lengths[i] for i in flat] == sorted(lengths)


def test_softmax_rows_sum_to_one_and_are_stable():
    probs = softmax(np.array([[1000.0, 1000.0], [0.0, -1000.0]]))
    assert np.allclose(probs.sum(axis=1), 1.0)
    assert np.allclose(probs[0], [0.5, 0.5])


def test_choose_device():
    assert choose_device("auto", ["CPUExecutionProvider"]) == "cpu"
    assert choose_device("auto", ["CUDAExecutionProvider", "CPUExecutionProvider"]) == "cuda"
    assert choose_device("cpu", ["CUDAExecutionProvider", "CPUExecutionProvider"]) == "cpu"
    with pytest.raises(RuntimeError, match="no CUDA provider"):
        choose_device("cuda", ["CPUExecutionProvider"])
