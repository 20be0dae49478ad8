"""Tests of the simulated listening world."""

import dataclasses

import numpy as np
import pytest

from ctxtag import audio
from ctxtag import labels
from ctxtag.sources import simulated as simulation

MID = simulation.SimulationConfig(
    num_tracks=600, num_users=2500, train_tracks=400, validation_tracks=100,
    test_tracks=300)


@pytest.fixture(scope="module")
def world():
  return simulation.World(MID)


@pytest.mark.parametrize("changes,message", [
    ({"num_tracks": -1}, "num_tracks must be positive"),
    ({"num_users": 0}, "num_users must be positive"),
    ({"test_tracks": 700}, "test_tracks=700 exceeds num_tracks=600"),
    ({"user_influence": 1.5}, r"user_influence must lie in \[0, 1\]"),
    ({"user_influence": -0.1}, r"user_influence must lie in \[0, 1\]"),
    ({"num_users": 8}, "max_users_per_track=10 exceeds num_users=8"),
    ({"min_users_per_track": 6, "max_users_per_track": 4},
     "max_users_per_track=4 is below"),
    ({"min_contexts_per_track": 11}, "min_contexts_per_track"),
    ({"embedding_noise": -1.0}, "embedding_noise must be >= 0"),
])
def test_invalid_settings_name_the_setting(changes, message):
  with pytest.raises(ValueError, match=message):
    simulation.World(dataclasses.replace(MID, **changes))


def test_split_statistics_are_shaped_like_the_paper(world):
  pairs_per_track, distinct, all_labels, users = [], [], [], []
  for track in world.split_examples("test"):
    track_users = [pair.user_id for pair in track.pairs]
    assert len(set(track_users)) == len(track_users)
    pairs_per_track.append(len(track.pairs))
    distinct.append(len({pair.label for pair in track.pairs}))
    all_labels += [pair.label for pair in track.pairs]
    users += track_users
  assert len(pairs_per_track) == MID.test_tracks
  assert min(pairs_per_track) >= 5 and max(pairs_per_track) <= 10
  assert min(distinct) >= 3
  shares = np.bincount(all_labels, minlength=10) / len(all_labels)
  np.testing.assert_allclose(shares, labels.PAPER_TEST_SHARES, atol=0.025)
  pairs_per_user = len(users) / len(set(users))
  assert 1.0 < pairs_per_user < 3.0


def test_tracks_recur_across_splits_with_other_pairs(world):
  train = set(world.split_song_ids("train"))
  test = set(world.split_song_ids("test"))
  assert train & test and test - train


def test_context_probs_are_the_stated_mixture(world):
  probs = world.context_probs(np.array([3, 3]), np.array([10, 11]))
  np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
  mix = MID.user_influence
  expected = ((1 - mix) * world.track_probs_NxC[3]
              + mix * world.user_probs_UxC[[10, 11]])
  np.testing.assert_allclose(probs, expected, rtol=1e-5)


def test_zero_user_influence_makes_context_depend_on_audio_only():
  audio_only = simulation.World(dataclasses.replace(MID, user_influence=0.0))
  for track in list(audio_only.split_examples("train"))[:20]:
    first = track.pairs[0].context_probs
    for pair in track.pairs:
      np.testing.assert_allclose(pair.context_probs, first)


def test_same_seed_same_world_other_seed_other_world(world):
  again = simulation.World(MID)
  first = list(world.split_examples("validation"))
  second = list(again.split_examples("validation"))
  assert [t.song_id for t in first] == [t.song_id for t in second]
  assert [[p.label for p in t.pairs] for t in first] == [
      [p.label for p in t.pairs] for t in second]
  np.testing.assert_array_equal(world.mel(5), again.mel(5))
  other = simulation.World(dataclasses.replace(MID, seed=1))
  assert not np.array_equal(world.embedding_UxE, other.embedding_UxE)


def test_embedding_is_a_noisy_but_informative_projection_of_taste(world):
  # Least squares from embedding back to taste on half the users, scored on
  # the other half: informative (high R^2) but not exact (noise).
  half = MID.num_users // 2
  x, y = world.embedding_UxE, world.taste_UxD
  weights = np.linalg.lstsq(x[:half], y[:half], rcond=None)[0]
  residual = y[half:] - x[half:] @ weights
  r_squared = 1 - residual.var() / y[half:].var()
  assert 0.8 < r_squared < 0.999


def test_attributes_are_audible_in_the_mel(world):
  ids = np.arange(60)
  mels = np.stack([world.mel(i) for i in ids])
  assert mels.shape == (60, audio.num_frames(MID.excerpt_seconds), 96)
  tempo, energy, brightness = world.attributes_NxA[ids, :3].T
  loudness = mels.mean(axis=(1, 2))
  centroid = (mels.mean(axis=1) * np.arange(96)).sum(1) / mels.mean(
      axis=1).sum(1)
  assert np.corrcoef(energy, loudness)[0, 1] > 0.5
  assert np.corrcoef(brightness, centroid)[0, 1] > 0.3
  # Beats show as periodic loudness: the strongest autocorrelation lag of
  # the frame loudness falls as tempo rises.
  lags = []
  for mel in mels:
    env = mel.mean(axis=1) - mel.mean()
    corr = np.correlate(env, env, mode="full")[len(env) + 6:]
    lags.append(np.argmax(corr[:14]) + 7)  # one beat: 7 to 20 frames
  assert np.corrcoef(tempo, lags)[0, 1] < -0.5


def test_a_batch_of_mels_is_each_tracks_front_end_output(world):
  # The build computes mels in batches; each must be the front end's mel of
  # the track's waveform, whatever batch it came in.
  ids = [0, 7, 31]
  batch = world.mels(ids)
  for song_id, mel in zip(ids, batch):
    np.testing.assert_array_equal(mel, world.mels([song_id, 1])[0])
    np.testing.assert_array_equal(
        mel, audio.log_mel(world.render(song_id), audio.SAMPLE_RATE,
                           MID.excerpt_seconds))


def test_harmonics_by_recurrence_equal_the_sum_of_sines():
  phase = np.linspace(0, 40, 1001, dtype=np.float32) % (2 * np.pi)
  for count in (1, 2, 6):
    np.testing.assert_allclose(
        simulation._harmonic_sum(phase, count),
        sum(np.sin(h * phase.astype(np.float64)) / h
            for h in range(1, count + 1)), atol=2e-6)


def test_each_beat_plays_one_note_at_its_pitch(world):
  # With percussion and noise floor off, the tone's strongest frequency
  # over a whole beat is one of the scale's notes over the track's root.
  quiet = simulation.World(MID)
  quiet.attributes_NxA[:, 4] = 0.0
  song = 3
  tempo, _, brightness, _, _ = quiet.attributes_NxA[song]
  wave = quiet.render(song)
  beat = int(60.0 / (70.0 + 100.0 * tempo) * audio.SAMPLE_RATE)
  root = 110.0 * 2.0 ** (4.0 * brightness)
  notes = root * 2.0 ** (np.array([0, 2, 4, 7, 9, 12]) / 12.0)
  middle = wave[len(wave) // 2 - beat // 2:len(wave) // 2 + beat // 2]
  spectrum = np.abs(np.fft.rfft(middle * np.hanning(len(middle)), 1 << 16))
  peak = np.argmax(spectrum) * audio.SAMPLE_RATE / (1 << 16)
  assert np.min(np.abs(notes - peak) / notes) < 0.03
