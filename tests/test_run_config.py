"""Run configs (ctxtag.run_config, ctxtag.configs): validated before
anything is written, with one line naming the key."""

import json
import os

import pytest

from ctxtag import errors
from ctxtag import files
from ctxtag import run
from ctxtag import run_config
from ctxtag.configs import default
from ctxtag.configs import smoke
from tests.fault_helpers import fail_fsync


@pytest.mark.parametrize("change,message", [
    ({"audio.batch_size": 0},
     "config audio.batch_size=0: expected an integer >= 1"),
    ({"user.batch_size": -8},
     "config user.batch_size=-8: expected an integer >= 1"),
    ({"audio_user.max_epochs": 0},
     "config audio_user.max_epochs=0: expected an integer >= 1"),
    ({"models": ("audio", "transformer")},
     "config models=('audio', 'transformer'): expected known model names"
     " only, 'transformer' is not one of ['audio', 'audio_user', 'user',"
     " 'audio_user_concat']"),
    ({"audio.learning_rate": float("nan")},
     "config audio.learning_rate=nan: expected a finite number in (0, inf)"),
    ({"user.learning_rate": float("inf")},
     "config user.learning_rate=inf: expected a finite number in (0, inf)"),
    ({"audio.learning_rate": 0.0},
     "config audio.learning_rate=0.0: expected a finite number in (0, inf)"),
    ({"audio.patience": 0},
     "config audio.patience=0: expected an integer >= 1"),
    ({"audio.steps_per_epoch": -1},
     "config audio.steps_per_epoch=-1: expected an integer >= 0"),
    ({"eval_batch_size": 0},
     "config eval_batch_size=0: expected an integer >= 1"),
    ({"log_every_steps": 0},
     "config log_every_steps=0: expected an integer >= 1"),
    ({"audio.decay_rate": 1.5},
     "config audio.decay_rate=1.5: expected a finite number in (0, 1]"),
    ({"audio.decay_rate": 0.0},
     "config audio.decay_rate=0.0: expected a finite number in (0, 1]"),
    ({"audio.decay_steps": 0},
     "config audio.decay_steps=0: expected an integer >= 1"),
    ({"audio.dropout_rate": 1.0},
     "config audio.dropout_rate=1.0: expected a finite number in [0, 1)"),
    ({"audio.optimizer": "sgd"},
     "config audio.optimizer='sgd': expected one of ['adam', 'adadelta']"),
    ({"audio.conv_widths": (8, 0)},
     "config audio.conv_widths=(8, 0): expected a non-empty list of positive"
     " integers"),
    ({"user.user_widths": ()},
     "config user.user_widths=(): expected a non-empty list of positive"
     " integers"),
    ({"dataset": "simulated"},
     "config dataset='simulated': expected 'contextual_tags/<config>'"),
    ({"split_strategy": "cold"},
     "config split_strategy='cold': expected one of ['', 'random',"
     " 'cold_user', 'cold_track', 'given']"),
    ({"seed": -1}, "config seed=-1: expected an integer >= 0"),
    ({"audio.checkpoint_every_steps": -1},
     "config audio.checkpoint_every_steps=-1: expected an integer >= 0"),
    ({"user.checkpoint_every_seconds": float("nan")},
     "config user.checkpoint_every_seconds=nan: expected a finite number in"
     " [0, inf)"),
    ({"split_fractions": (0.6, 0.2, 0.3)},
     "config split_fractions=(0.6, 0.2, 0.3): expected three positive"
     " numbers (train, validation, test) summing to 1"),
])
def test_bad_config_is_refused_and_never_saved(tmp_path, change, message):
  config = smoke.get_config()
  for key, value in change.items():
    section, _, name = key.rpartition(".")
    (config[section] if section else config)[name] = value
  workdir = tmp_path / "run"
  with pytest.raises(errors.ConfigError) as raised:
    run.save_config(config, str(workdir))
  assert str(raised.value) == message
  assert not workdir.exists()
  # The corrected rerun on the same workdir is not "another config".
  run.save_config(smoke.get_config(), str(workdir))
  run.save_config(smoke.get_config(), str(workdir))
  assert run_config.load(str(workdir / "config.json")) == json.loads(
      smoke.get_config().to_json_best_effort())


def test_unknown_dataset_config_and_misspelt_key_are_refused(tmp_path):
  config = smoke.get_config()
  config.dataset = "contextual_tags/simulatd"
  with pytest.raises(errors.ConfigError,
                     match=r"config dataset='contextual_tags/simulatd':"
                     r" expected a config of contextual_tags: \[.*'simulated'"):
    run.save_config(config, str(tmp_path))
  config = smoke.get_config()
  config.audio.learnig_rate = 0.1
  with pytest.raises(errors.ConfigError,
                     match=r"config audio.learnig_rate: unknown key; known:"
                     r" \[.*'batch_size'"):
    run.save_config(config, str(tmp_path))
  assert not os.listdir(tmp_path)


def test_types_are_checked_on_a_saved_config():
  config = json.loads(default.get_config().to_json_best_effort())
  run_config.validate(config, default.get_config())  # lists for tuples
  config["audio"]["batch_size"] = 32.0
  with pytest.raises(errors.ConfigError,
                     match=r"config audio.batch_size=32.0: expected an"
                     r" integer >= 1"):
    run_config.validate(config)
  config["audio"]["batch_size"] = True
  with pytest.raises(errors.ConfigError, match=r"audio.batch_size=True"):
    run_config.validate(config)


@pytest.mark.parametrize("module", ["default", "smoke", "paper"])
def test_shipped_configs_pass(module):
  configs = __import__(f"ctxtag.configs.{module}", fromlist=["get_config"])
  run_config.validate(configs.get_config(), default.get_config(),
                      ["simulated", "simulated_small"])


def test_config_write_is_atomic_and_names_the_file(tmp_path, monkeypatch):
  fail_fsync(monkeypatch)
  with pytest.raises(files.WriteError,
                     match=r"run/config.json: cannot write \(No space"):
    run.save_config(smoke.get_config(), str(tmp_path / "run"))
  assert os.listdir(tmp_path / "run") == []


def test_damaged_config_json_names_the_file(tmp_path):
  (tmp_path / "config.json").write_text('{"seed": 0,\n  "models": [')
  with pytest.raises(errors.ConfigError,
                     match=r"config.json, line 2: not valid JSON"):
    run.load_run_config(str(tmp_path))
  with pytest.raises(FileNotFoundError,
                     match=r"dataset_path.txt: missing; is .* a ctxtag run"):
    run.run_dataset_path(str(tmp_path))


def test_another_config_names_the_keys_that_differ(tmp_path):
  run.save_config(smoke.get_config(), str(tmp_path))
  config = smoke.get_config()
  config.seed = 1
  config.audio.batch_size = 16
  with pytest.raises(errors.ConfigError) as raised:
    run.save_config(config, str(tmp_path))
  assert str(raised.value) == (
      f"{tmp_path}/config.json: this workdir was made with another config"
      " (audio.batch_size: 16 here, 8 in config.json; seed: 1 here, 0 in"
      " config.json); use a new --workdir or the same config")
  for name in ("audio", "user", "audio_user"):
    config[name].hidden = 99
  with pytest.raises(errors.ConfigError,
                     match=r"; and 2 more\); use a new --workdir"):
    run.save_config(config, str(tmp_path))


def test_describe_differences_shows_absent_keys():
  assert run_config.describe_differences({"a": {"b": 1}}, {"a": {}}) == (
      "a.b: 1 here, absent in config.json")


@pytest.mark.slow
def test_a_batch_larger_than_the_split_is_refused_and_the_fix_runs(
    small_dataset_path, tmp_path):
  data_dir = os.path.dirname(os.path.dirname(os.path.dirname(
      small_dataset_path)))
  config = smoke.get_config()
  config.data_dir = data_dir
  config.audio.batch_size = 1_000_000
  workdir = str(tmp_path / "run")
  with pytest.raises(errors.ConfigError,
                     match=r"config audio.batch_size=1000000: larger than"
                     r" the \d+ tracks of split 'train'; expected at most"):
    run.prepare_run(config, workdir)
  assert not os.path.exists(os.path.join(workdir, "config.json"))
  config.audio.batch_size = 8
  assert run.prepare_run(config, workdir) == small_dataset_path
  assert os.path.exists(os.path.join(workdir, "config.json"))


def test_a_config_saved_before_a_key_existed_still_matches(tmp_path):
  path = str(tmp_path / "config.json")
  run_config.save(smoke.get_config(), path, declared=default.get_config())
  with open(path) as f:
    saved = json.load(f)
  del saved["mo_mg_truth"]  # as written before the key was added
  del saved["audio"]["cpu_fast_path"]
  with open(path, "w") as f:
    json.dump(saved, f)
  run_config.save(smoke.get_config(), path, declared=default.get_config())
  changed = smoke.get_config()
  changed.mo_mg_truth = "all_splits"  # not the default it ran with
  with pytest.raises(errors.ConfigError, match="mo_mg_truth"):
    run_config.save(changed, path, declared=default.get_config())
