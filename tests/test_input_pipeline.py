"""Tests of the input pipeline: contents, order, resumption, padding."""

import itertools

import jax
import numpy as np
import pytest

from ctxtag import input_pipeline


@pytest.fixture(scope="module")
def train(small_dataset_path):
  return input_pipeline.load_split(small_dataset_path, "train")


def test_split_tables_match_the_records(train):
  assert train.num_tracks == 40
  for index in (0, 17, 39):
    record = train.source[index]
    rows = np.flatnonzero(train.pair_track_P == index)
    assert list(train.label_P[rows]) == list(record["pairs"]["label"])
    assert list(train.user_id_P[rows]) == list(record["pairs"]["user_id"])
    assert train.song_id_N[index] == record["song_id"]
  assert train.user_embedding_PxE.shape == (train.num_pairs, 256)
  assert train.context_probs_PxC.shape == (train.num_pairs, 10)


def test_track_batches_carry_the_union_of_contexts(train):
  batch = next(input_pipeline.train_batches(train, "tracks", 8, seed=0))
  assert batch["mel"].shape == (8, 44, 96) and batch["mel"].dtype == np.float32
  for row, track in enumerate(batch["index"]):
    contexts = set(train.source[int(track)]["pairs"]["label"])
    expected = np.zeros(10)
    expected[list(contexts)] = 1
    np.testing.assert_array_equal(batch["labels"][row], expected)
    np.testing.assert_array_equal(
        batch["mel"][row], train.source[int(track)]["mel"].astype(np.float32))
  assert batch["labels"].sum(axis=1).min() >= 3


def test_pair_batches_join_mel_embedding_and_one_hot(train):
  batch = next(input_pipeline.train_batches(train, "pairs", 16, seed=3))
  assert batch["user_embedding"].shape == (16, 256)
  for row, pair in enumerate(batch["index"]):
    track = train.pair_track_P[pair]
    np.testing.assert_array_equal(
        batch["mel"][row], train.source[int(track)]["mel"].astype(np.float32))
    np.testing.assert_array_equal(batch["user_embedding"][row],
                                  train.user_embedding_PxE[pair])
    assert batch["labels"][row].argmax() == train.label_P[pair]
    assert batch["labels"][row].sum() == 1


def test_each_epoch_is_a_fresh_permutation(train):
  per_epoch = input_pipeline.steps_per_epoch(train, "pairs", 32)
  batches = list(itertools.islice(
      input_pipeline.train_batches(train, "pairs", 32, seed=1), 2 * per_epoch))
  first = np.concatenate([b["index"] for b in batches[:per_epoch]])
  second = np.concatenate([b["index"] for b in batches[per_epoch:]])
  assert len(set(first)) == len(first) == per_epoch * 32
  assert not np.array_equal(first, second)


def test_order_is_fixed_by_seed_and_resumable_from_any_step(train):
  def indices(seed, start, count):
    stream = input_pipeline.train_batches(train, "tracks", 8, seed, start)
    return [b["index"].tolist() for b in itertools.islice(stream, count)]

  full = indices(seed=5, start=0, count=12)
  assert indices(seed=5, start=0, count=12) == full
  assert indices(seed=5, start=7, count=5) == full[7:]  # crosses an epoch
  assert indices(seed=6, start=0, count=12) != full


def test_eval_batches_cover_every_example_once_and_mask_padding(train):
  batches = list(input_pipeline.eval_batches(train, "pairs", 64))
  assert all(b["mel"].shape[0] == 64 for b in batches)
  kept = np.concatenate([b["index"][b["mask"] == 1] for b in batches])
  np.testing.assert_array_equal(kept, np.arange(train.num_pairs))
  padding = sum(int((b["mask"] == 0).sum()) for b in batches)
  assert padding == len(batches) * 64 - train.num_pairs


def test_processes_take_disjoint_shares_of_each_batch(train, monkeypatch):
  whole = next(input_pipeline.train_batches(train, "tracks", 8, seed=2))
  shares = []
  for process in range(2):
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    monkeypatch.setattr(jax, "process_index", lambda p=process: p)
    shares.append(next(input_pipeline.train_batches(
        train, "tracks", 8, seed=2))["index"])
  np.testing.assert_array_equal(np.concatenate(shares), whole["index"])
  monkeypatch.setattr(jax, "process_count", lambda: 3)
  with pytest.raises(ValueError, match="not divisible by the 3 processes"):
    next(input_pipeline.train_batches(train, "tracks", 8, seed=2))


def test_missing_split_and_tiny_split_errors(small_dataset_path, train):
  with pytest.raises(ValueError, match="no split 'dev'"):
    input_pipeline.load_split(small_dataset_path, "dev")
  with pytest.raises(ValueError, match="fewer than one batch of 64"):
    next(input_pipeline.train_batches(train, "tracks", 64, seed=0))


def test_a_split_is_read_once_per_process(small_dataset_path, train):
  assert input_pipeline.load_split(small_dataset_path, "train") is train
  assert input_pipeline.load_split(small_dataset_path, "test") is not train


def test_user_batches_carry_no_mel(train):
  batch = next(input_pipeline.train_batches(train, "users", 16, seed=3))
  assert "mel" not in batch
  pairs = next(input_pipeline.train_batches(train, "pairs", 16, seed=3))
  for key in ("user_embedding", "labels", "index"):
    np.testing.assert_array_equal(batch[key], pairs[key])


def test_eval_indices_are_the_eval_batches(train):
  for (indices, mask), batch in zip(
      input_pipeline.eval_indices(train, "tracks", 16),
      input_pipeline.eval_batches(train, "tracks", 16), strict=True):
    np.testing.assert_array_equal(indices, batch["index"])
    np.testing.assert_array_equal(mask, batch["mask"])


def test_example_batch_has_the_shapes_of_real_batches(train):
  for kind in ("tracks", "pairs", "users"):
    real = next(input_pipeline.eval_batches(train, kind, 4))
    example = input_pipeline.example_batch(train, kind, 4)
    assert {k: (v.shape, v.dtype) for k, v in example.items()} == {
        k: (v.shape, v.dtype) for k, v in real.items() if k != "index"}


def test_all_mels_are_the_records_mels(train):
  mels = train.mel_NxTxF
  assert mels.dtype == np.float16 and mels.shape == (40, 44, 96)
  for index in (0, 39):
    np.testing.assert_array_equal(mels[index], train.source[index]["mel"])
