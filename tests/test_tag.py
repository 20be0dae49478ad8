"""Tagging new audio with a trained run, without its dataset."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile

from ctxtag import audio
from ctxtag import errors
from ctxtag import inference
from ctxtag import input_pipeline
from ctxtag import labels
from ctxtag import run
from ctxtag import steps
from ctxtag import transfer


def _write_files(directory) -> dict[str, str]:
  os.makedirs(os.path.join(directory, "nested"), exist_ok=True)
  rng = np.random.default_rng(0)
  paths = {}
  for name, seconds in (("a.wav", 3.0), ("nested/b.flac", 2.5),
                        ("c.ogg", 4.0), ("short.wav", 0.5)):
    path = os.path.join(directory, name)
    soundfile.write(path, rng.uniform(-0.3, 0.3, int(seconds * 44100)), 44100)
    paths[name] = path
  paths["broken.mp3"] = os.path.join(directory, "broken.mp3")
  with open(paths["broken.mp3"], "wb") as f:
    f.write(b"no audio here" * 50)
  return paths


def _without_dataset(smoke_run, tmp_path) -> str:
  copy = str(tmp_path / "run")
  shutil.copytree(smoke_run, copy, ignore=shutil.ignore_patterns("data"))
  return copy


def test_files_are_tagged_by_the_audio_model_without_the_dataset(
    smoke_run, tmp_path):
  workdir = _without_dataset(smoke_run, tmp_path)
  paths = _write_files(str(tmp_path / "music"))
  config = run.load_run_config(workdir)
  output = inference.tag(workdir, config, str(tmp_path / "music"), top_k=3,
                         workers=2, batch_size=2)
  tagged = {os.path.basename(r["file"]): r for r in output["results"]}
  assert set(tagged) == {"a.wav", "b.flac", "c.ogg"}
  assert {os.path.basename(e["file"]) for e in output["errors"]} == {
      "short.wav", "broken.mp3"}
  for result in tagged.values():
    assert result["model"] == "audio" and result["user_id"] is None
    scores = [c["score"] for c in result["contexts"]]
    assert len(scores) == 3 and scores == sorted(scores, reverse=True)
  assert not os.path.exists(os.path.join(workdir, "data"))


def test_scores_equal_the_training_path_for_a_known_user(smoke_run, tmp_path):
  config = run.load_run_config(smoke_run)
  paths = _write_files(str(tmp_path / "music"))
  users = inference.load_users(smoke_run)
  test = input_pipeline.load_split(run.run_dataset_path(smoke_run), "test")
  user_id = int(test.user_id_P[0])
  np.testing.assert_array_equal(users[user_id], test.user_embedding_PxE[0])
  output = inference.tag(smoke_run, config, paths["a.wav"], user_id=user_id,
                         top_k=10, workers=1)
  result, = output["results"]
  assert result["model"] == "audio_user" and result["user_id"] == user_id
  card = inference.load_card(smoke_run)
  mel = audio.log_mel_from_file(paths["a.wav"], card.excerpt_seconds)
  state = transfer.restore_best("audio_user", config, smoke_run,
                                card.frames)
  expected = np.asarray(steps.predict_step(
      state, {"mel": mel.astype(np.float16).astype(np.float32)[None],
              "user_embedding": users[user_id][None]}, output="single_label"))
  got = {c["context"]: c["score"] for c in result["contexts"]}
  np.testing.assert_allclose([got[c] for c in labels.LABELS], expected[0],
                             atol=2e-6)


def test_an_unknown_user_is_reported_and_gets_the_audio_model(
    smoke_run, tmp_path):
  paths = _write_files(str(tmp_path / "music"))
  config = run.load_run_config(smoke_run)
  output = inference.tag(smoke_run, config, paths["c.ogg"], user_id=-12345)
  assert output["results"][0]["model"] == "audio"
  assert "user -12345 is not one of the run's" in output["notes"][0]


def test_bad_embeddings_and_paths_are_clear(tmp_path):
  path = str(tmp_path / "e.npy")
  np.save(path, np.zeros(7))
  with pytest.raises(errors.DatasetError, match=r"shape \(7,\), expected"):
    inference.read_embedding(path)
  np.save(path, np.array(["0.5"] * 256))
  with pytest.raises(errors.DatasetError) as raised:
    inference.read_embedding(path)
  assert str(raised.value) == (
      f"--user_embedding {path}: holds <U3 values of shape (256,); expected"
      " 256 float values (a .npy of shape (256,))")
  (tmp_path / "text.npy").write_text("0.1 0.2")
  with pytest.raises(errors.DatasetError, match=r"text.npy: cannot read a"
                     r" .npy array .*expected 256 float values"):
    inference.read_embedding(str(tmp_path / "text.npy"))
  np.save(path, np.ones((16, 16)))  # any shape of 256 values
  assert inference.read_embedding(path).shape == (256,)
  with pytest.raises(errors.DatasetError, match="no such file or directory"):
    inference.find_audio(str(tmp_path / "nothing"))


@pytest.mark.slow
def test_launcher_writes_json_and_refuses_a_missing_run_in_one_line(
    smoke_run, tmp_path):
  paths = _write_files(str(tmp_path / "music"))
  out = str(tmp_path / "tags.json")
  embedding = str(tmp_path / "u.npy")
  np.save(embedding, np.ones(256, np.float32))
  done = subprocess.run(
      [sys.executable, "-m", "launch.tag", f"--workdir={smoke_run}",
       f"--audio={tmp_path / 'music'}", f"--user_embedding={embedding}",
       "--top_k=2", f"--output={out}"], capture_output=True, text=True,
      check=True)
  assert "tagged 3 files (2 errors)" in done.stdout
  with open(out) as f:
    tags = json.load(f)
  assert {r["model"] for r in tags["results"]} == {"audio_user"}
  assert all(len(r["contexts"]) == 2 for r in tags["results"])
  failed = subprocess.run(
      [sys.executable, "-m", "launch.tag", f"--workdir={tmp_path}",
       f"--audio={paths['a.wav']}"], capture_output=True, text=True)
  assert failed.returncode == 1
  assert failed.stderr.strip().count("\n") == 0
  assert "config.json" in failed.stderr


@pytest.mark.slow
def test_list_users_prints_the_run_s_users_and_the_file_of_all(
    smoke_run, tmp_path):
  done = subprocess.run(
      [sys.executable, "-m", "launch.tag", f"--workdir={smoke_run}",
       "--list_users"], capture_output=True, text=True, check=True)
  users = sorted(inference.load_users(smoke_run))
  assert f"{len(users):,} users in the run's data" in done.stdout
  assert ": " + ", ".join(str(u) for u in users[:10]) in done.stdout
  assert f"{os.path.join(smoke_run, inference.USERS_FILE)}, array user_id" in (
      done.stdout)
  assert done.stderr.strip() == ""
  no_audio = subprocess.run(
      [sys.executable, "-m", "launch.tag", f"--workdir={smoke_run}"],
      capture_output=True, text=True)
  assert no_audio.returncode == 2
  assert no_audio.stderr.strip().count("\n") == 0
  assert "--audio is required" in no_audio.stderr
  no_run = subprocess.run(
      [sys.executable, "-m", "launch.tag", f"--workdir={tmp_path}",
       "--list_users"], capture_output=True, text=True)
  assert no_run.returncode == 1
  assert no_run.stderr.strip().count("\n") == 0
  assert "users.npz: missing" in no_run.stderr


def test_fifos_are_skipped_and_names_that_are_not_utf8_are_found(tmp_path):
  music = tmp_path / "music"
  paths = _write_files(str(music))
  os.mkfifo(music / "pipe.wav")
  odd = os.path.join(os.fsencode(str(music)), b"caf\xe9.wav")
  shutil.copy(paths["a.wav"], odd)
  found, skipped = inference.find_audio(str(music))
  assert os.fsdecode(odd) in found
  assert skipped == [{"file": str(music / "pipe.wav"), "reason": "a FIFO"}]
  assert inference.printable(os.fsdecode(odd)).endswith("caf\\xe9.wav")
  with pytest.raises(errors.DatasetError, match=r"pipe.wav: a FIFO"):
    inference.find_audio(str(music / "pipe.wav"))


@pytest.mark.slow
def test_stdout_is_the_json_alone_with_a_fifo_and_an_odd_name(
    smoke_run, tmp_path):
  music = tmp_path / "music"
  paths = _write_files(str(music))
  os.mkfifo(music / "pipe.wav")
  shutil.copy(paths["a.wav"], os.path.join(os.fsencode(str(music)),
                                           b"caf\xe9.wav"))
  done = subprocess.run(
      [sys.executable, "-m", "launch.tag", f"--workdir={smoke_run}",
       f"--audio={music}", "--user_id=-1"], capture_output=True,
      timeout=300)
  assert done.returncode == 0, done.stderr
  tags = json.loads(done.stdout)  # nothing else on stdout
  names = sorted(os.path.basename(r["file"]) for r in tags["results"])
  assert names == ["a.wav", "b.flac", "c.ogg", "caf\\xe9.wav"]
  assert tags["skipped"] == [{"file": str(music / "pipe.wav"),
                              "reason": "a FIFO"}]
  stderr = done.stderr.decode()
  assert "tag: 6/6 files" in stderr
  assert "note: user -1 is not one of the run's" in stderr
  assert "note: skipped 1 entries that are not regular files" in stderr


def test_the_json_names_a_checkpoint_other_than_the_evaluated_best(
    smoke_run, tmp_path):
  workdir = _without_dataset(smoke_run, tmp_path)
  config = run.load_run_config(workdir)
  paths = _write_files(str(tmp_path / "music"))
  output = inference.tag(workdir, config, paths["a.wav"], top_k=1)
  assert output["checkpoint"]["evaluated_best"] and output["notes"] == []
  # A training that has not finished (or is running) has no summary yet.
  os.remove(os.path.join(workdir, "audio", "summary.json"))
  output = inference.tag(workdir, config, paths["a.wav"], top_k=1)
  step = output["checkpoint"]["step"]
  assert output["checkpoint"] == {"model": "audio", "step": step,
                                  "evaluated_best": False}
  assert output["notes"] == [
      "the audio model's training has not finished (no"
      f" {workdir}/audio/summary.json): used its best checkpoint so far,"
      f" step {step}"]


def test_a_workdir_held_by_another_process_is_tagged_with_a_note(
    smoke_run, tmp_path):
  from tests import test_locks  # pylint: disable=import-outside-toplevel
  workdir = _without_dataset(smoke_run, tmp_path)
  holder = test_locks.Holder(workdir)
  try:
    output = inference.tag(workdir, run.load_run_config(workdir),
                           _write_files(str(tmp_path / "music"))["a.wav"])
  finally:
    holder.kill()
  assert len(output["results"]) == 1
  note, = output["notes"]
  assert note.startswith(f"another process is working on {workdir}")
  assert str(holder.pid) in note


def test_a_truncated_users_file_is_one_line(smoke_run, tmp_path):
  workdir = _without_dataset(smoke_run, tmp_path)
  path = os.path.join(workdir, inference.USERS_FILE)
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) // 2)
  with pytest.raises(errors.DatasetError, match=r"users.npz: damaged"):
    inference.load_users(workdir)


def test_tagging_nothing_exits_non_zero_with_the_json(smoke_run, tmp_path):
  music = tmp_path / "broken"
  music.mkdir()
  (music / "x.mp3").write_bytes(b"no audio here" * 50)
  out = tmp_path / "out.json"
  done = subprocess.run(
      [sys.executable, "-m", "launch.tag", f"--workdir={smoke_run}",
       f"--audio={music}", f"--output={out}"], capture_output=True,
      text=True, cwd=os.path.dirname(os.path.dirname(__file__)), timeout=300)
  assert done.returncode == 1
  assert done.stderr.strip().splitlines()[-1] == (
      "error: no file could be tagged (1 errors, 0 skipped: see the JSON)")
  written = json.load(open(out))
  assert written["results"] == [] and len(written["errors"]) == 1


def _damaged_music(directory) -> dict[str, str]:
  """A damaged MP3 that still decodes (mpg123 resyncs, noting it on fd 2),
  bytes that are no audio, a good WAV and a dangling link."""
  from tests import zenodo_fixture  # pylint: disable=g-import-not-at-top
  os.makedirs(directory, exist_ok=True)
  paths = {name: os.path.join(directory, name)
           for name in ("damaged.mp3", "garbage.mp3", "good.wav")}
  # (this seed's damage leaves 3.4 s decodable)
  zenodo_fixture.corrupt_mp3(paths["damaged.mp3"], 5, 4.0)
  with open(paths["garbage.mp3"], "wb") as f:
    f.write(b"garbage" * 500)
  zenodo_fixture.write_audio_file(paths["good.wav"], 5, 2.0)
  os.symlink("/nonexistent/x.wav", os.path.join(directory, "link.wav"))
  return paths


def _assert_clean(terminal: str) -> None:
  # mpg123's notes start "Note: "; Python's warnings name their category.
  for noise in ("Illegal Audio-MPEG-Header", "Note: ", "possibly a pipe",
                "Warning:", "Traceback"):
    assert noise not in terminal, terminal


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_decoder_notes_go_to_each_file_s_entry_from_every_launcher(
    smoke_run, tmp_path, workers):
  paths = _damaged_music(str(tmp_path / "music"))
  assert inference.load_card(smoke_run).excerpt_seconds <= 3.0
  out = tmp_path / "tags.json"
  done = subprocess.run(
      [sys.executable, "-m", "launch.tag", f"--workdir={smoke_run}",
       f"--audio={tmp_path / 'music'}", f"--output={out}",
       f"--workers={workers}"], capture_output=True, text=True, cwd=tmp_path,
      timeout=300)
  assert done.returncode == 0, done.stderr
  _assert_clean(done.stdout + done.stderr)
  with open(out) as f:
    tags = json.load(f)
  damaged, = [r for r in tags["results"] if r["file"] == paths["damaged.mp3"]]
  assert "Trying to resync" in damaged["decoder_notes"]
  good, = [r for r in tags["results"] if r["file"] == paths["good.wav"]]
  assert "decoder_notes" not in good
  garbage, = tags["errors"]
  assert garbage["error"] == (
      f"{paths['garbage.mp3']}: cannot decode audio (not a WAV, FLAC, OGG,"
      " Opus or MP3 file that libsndfile can read, or a damaged one)")
  assert "resync" in garbage["decoder_notes"]
  assert tags["skipped"] == [{
      "file": str(tmp_path / "music" / "link.wav"),
      "reason": "a symbolic link to '/nonexistent/x.wav', which does not"
                " exist"}]
  note = ("the decoder wrote notes on 2 file(s) (such as mpg123's \"Trying"
          " to resync...\" on a damaged MP3): see each file's"
          " \"decoder_notes\"")
  assert note in tags["notes"]
  assert f"note: {note}" in done.stderr
  index = tmp_path / "index"
  done = subprocess.run(
      [sys.executable, "-m", "launch.index", f"--workdir={smoke_run}",
       f"--audio={tmp_path / 'music'}", f"--output={index}",
       f"--workers={workers}"], capture_output=True, text=True, cwd=tmp_path,
      timeout=300)
  assert done.returncode == 0, done.stderr
  _assert_clean(done.stdout + done.stderr)
  assert "the decoder wrote notes on 1 indexed file(s)" in done.stdout
  with open(index / "report.json") as f:
    report = json.load(f)
  assert [e["file"] for e in report["decoder_notes"]] == ["damaged.mp3"]
  skipped = {e["file"]: e for e in report["skipped_files"]}
  assert skipped["garbage.mp3"]["reason"] == "undecodable"
  assert "resync" in skipped["garbage.mp3"]["decoder_notes"]
  assert "link.wav" in str(skipped)


@pytest.mark.slow
def test_the_python_api_keeps_decoder_notes_off_the_terminal(
    smoke_run, tmp_path, capfd):
  import ctxtag  # pylint: disable=g-import-not-at-top
  paths = _damaged_music(str(tmp_path / "music"))
  run_ = ctxtag.open_run(smoke_run)
  tags = run_.tag(str(tmp_path / "music"))
  mel = run_.mel(paths["damaged.mp3"])
  assert mel.shape[1] == audio.N_MELS
  out, err = capfd.readouterr()
  _assert_clean(out + err)
  assert any("decoder_notes" in r for r in tags["results"])
