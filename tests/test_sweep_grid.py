"""Sweeps over any setting (ctxtag.sweep's axes and grid, launch.sweep's
--vary) and their groups over training seeds, end to end with a stubbed
reproduction that writes prediction tables and their real evaluation."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from ctxtag import errors
from ctxtag import run
from ctxtag import run_config
from ctxtag import study
from ctxtag import sweep
from ctxtag import tables
from ctxtag.configs import default
from ctxtag.configs import smoke
from ctxtag.evaluation import bootstrap

# The default run's models, in the model table's order.
_MODELS = ("audio", "audio_user", "user", "oracle")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("text,expected", [
    ("seed=0,1,2", ("seed", ["0", "1", "2"])),
    (" audio.conv_widths = (8,16), (4, 4) ",
     ("audio.conv_widths", ["(8,16)", "(4, 4)"])),
    ("audio_user.audio_init='',audio", ("audio_user.audio_init",
                                        ["''", "audio"])),
])
def test_parse_vary(text, expected):
  assert sweep.parse_vary(text) == expected


@pytest.mark.parametrize("text,message", [
    ("seed", "is not KEY=V1,V2"), ("=1", "is not KEY=V1,V2"),
    ("seed=", "an empty value"), ("seed=1,,2", "an empty value"),
])
def test_parse_vary_refuses(text, message):
  with pytest.raises(errors.ConfigError, match=message):
    sweep.parse_vary(text)


def test_axes_take_the_config_types_and_name_directories():
  config = default.get_config()
  axes = sweep.make_axes(config, [
      (sweep.INFLUENCE_KEY, (0.5,)), "seed=3,1", "audio.learning_rate=1e-3,0.01", "audio_user.fusion=late",
      "audio.deep=true,0", "audio.conv_widths=(8,16),(4,4,4,4)",
      "world.track_sharpness=2,4", "audio_user.audio_init='',audio"])
  assert [(a.key, a.values, a.label) for a in axes] == [
      ("world.user_influence", (0.5,), "influence"),
      ("seed", (3, 1), "seed"),
      ("audio.learning_rate", (0.001, 0.01), "learning_rate"),
      ("audio_user.fusion", ("late",), "fusion"),
      ("audio.deep", (True, False), "deep"),
      ("audio.conv_widths", ((8, 16), (4, 4, 4, 4)), "conv_widths"),
      ("world.track_sharpness", (2.0, 4.0), "track_sharpness"),
      ("audio_user.audio_init", ("", "audio"), "audio_init")]
  assert [type(v) for v in axes[1].values] == [int, int]
  assert [a.name(a.values[-1]) for a in axes] == [
      "influence_0.5", "seed_1", "learning_rate_0.01", "fusion_late",
      "deep_false", "conv_widths_4-4-4-4", "track_sharpness_4",
      "audio_init_audio"]
  assert axes[-1].name("") == "audio_init_"
  # Two keys with one last component: the whole keys name them.
  clash = sweep.make_axes(config, [("seed", [0]), ("world.seed", [1]),
                                   ("audio.learning_rate", [0.1])])
  assert [a.label for a in clash] == ["seed", "world.seed", "learning_rate"]
  # Nothing: today's influence sweep.
  assert [a.label for a in sweep.make_axes(config)] == ["influence"]
  assert sweep.make_axes(config)[0].values == sweep.DEFAULT_INFLUENCES
  # --vary alone: no influence axis.
  assert [a.key for a in sweep.make_axes(config, ["seed=0"])] == ["seed"]


@pytest.mark.parametrize("vary,message", [
    (["sed=1"], r"--vary sed: unknown config key; known: \[.*'seed'"),
    (["audio.rate=1"], r"unknown config key; known in audio: \["),
    (["audio=1"], "a section of the config; name one of its keys"),
    (["seed.x=1"], "unknown config key"),
    (["world.nope=1"], "unknown setting of the simulated world; known:"),
    (["seed=1,x"], "'x' is not of type int"),
    (["seed=1.5"], "'1.5' is not of type int"),
    (["audio.learning_rate=inf"], "not a finite number"),
    (["audio.deep=maybe"], "not a boolean"),
    (["audio.conv_widths=8,16"], "is not a tuple; write each value in"
     " parentheses"),
    (["seed=1,01"], "seed: 1 is given twice"),
    (["audio_user.fusion=a/b"], "cannot name a directory"),
    (["seed=0", "seed=1"], "--vary seed is given twice"),
    (["world.user_influence=0"], "world.user_influence is given twice"),
    (["dataset_options=seed=1"], "vary the world's settings one by one"),
])
def test_bad_axes_are_refused_in_one_line(vary, message):
  with pytest.raises(errors.ConfigError, match=message) as caught:
    influences = ([(sweep.INFLUENCE_KEY, (0.5,))]
                  if "user_influence" in vary[0] else [])
    sweep.make_axes(default.get_config(), influences + vary)
  assert "\n" not in str(caught.value)


def test_split_strategy_is_one_axis_or_one_flag():
  with pytest.raises(errors.ConfigError, match="give one"):
    sweep.make_axes(default.get_config(), ["split_strategy=cold_user"],
                    split_strategy="cold_track")


def test_point_config_sets_keys_and_world_settings():
  config = default.get_config()
  config.dataset_options = "seed=3, embedding_noise=0.5"
  config.lock()
  changed = sweep.point_config(config, {
      "world.user_influence": 0.25, "audio.learning_rate": 0.01, "seed": 4,
      "world.track_sharpness": 2.0}, "cold_user")
  assert changed.dataset_options == (
      "seed=3,embedding_noise=0.5,user_influence=0.25,track_sharpness=2")
  assert (changed.audio.learning_rate, changed.seed) == (0.01, 4)
  assert changed.split_strategy == "cold_user"
  assert config.audio.learning_rate == 0.003 and config.seed == 0  # a copy
  run_config.validate(changed, declared=default.get_config())
  # No world setting: the options are the config's, as written.
  assert sweep.point_config(config, {"seed": 1}).dataset_options == (
      config.dataset_options)
  with pytest.raises(errors.ConfigError, match="sets seed, which the sweep"):
    sweep.point_config(config, {"world.seed": 1})
  config = default.get_config()
  config.dataset = "contextual_tags/zenodo"
  with pytest.raises(errors.ConfigError,
                     match="varying world.track_sharpness needs the"
                     " simulated world"):
    sweep.point_config(config, {"world.track_sharpness": 2.0})


def test_grid_is_the_product_in_axis_order_and_checks_every_point():
  config = smoke.get_config()
  axes = sweep.make_axes(config, [(sweep.INFLUENCE_KEY, (1.0,)), "seed=0,1",
                                  "audio_user.fusion=late,concat"])
  points = sweep.grid(config, axes)
  assert [p.path for p in points] == [
      "influence_1/seed_0/fusion_late", "influence_1/seed_0/fusion_concat",
      "influence_1/seed_1/fusion_late", "influence_1/seed_1/fusion_concat"]
  assert points[3].config.audio_user.fusion == "concat"
  assert points[3].config.dataset_options == "user_influence=1"
  assert points[0].describe(axes) == (
      "user_influence 1, seed 0, audio_user.fusion late")
  with pytest.raises(errors.ConfigError, match=r"^sweep point fusion_early:"
                     r" config audio_user.fusion='early': expected one of"):
    sweep.grid(config, sweep.make_axes(config, ["audio_user.fusion=early"]))
  with pytest.raises(errors.ConfigError, match="sweep point influence_2:"
                     " simulation setting user_influence must lie in"):
    sweep.grid(config, sweep.make_axes(config, ["world.user_influence=2"]))


def test_comparison_pairs_cover_every_pair_in_model_order():
  assert sweep.comparison_pairs(_MODELS) == [
      ("audio_user", "audio"), ("user", "audio"), ("oracle", "audio"),
      ("audio_user", "user"), ("oracle", "audio_user"), ("oracle", "user")]
  assert sweep.comparison_pairs(["user", "audio"]) == [("user", "audio")]


# The stubbed reproduction: a tiny world's tables and their real evaluation.
_TRACKS, _PAIRS_PER_TRACK = 16, 5
_SETTINGS = bootstrap.Settings(resamples=300, seed=0, confidence=0.9)


def _world(config):
  """(song, user, label) of each test pair: fixed by the world, unless a
  re-split seeded by config.seed picks other users."""
  resplit = bool(config.split_strategy)
  rng = np.random.default_rng(100 + config.seed if resplit else 7)
  song = np.repeat(np.arange(_TRACKS), _PAIRS_PER_TRACK)
  slot = np.tile(np.arange(_PAIRS_PER_TRACK), _TRACKS)
  user = (3 * song + 5 * slot) % 29 + (100 * config.seed if resplit else 0)
  return song, user, rng.integers(0, 10, len(song))


def _write_run(config, workdir):
  """What a reproduction leaves that the sweep reads: config.json, the test
  predictions of every model, results.json evaluated from them. Training
  (config.seed) and the fusion change the predictions."""
  os.makedirs(os.path.join(workdir, "predictions"), exist_ok=True)
  run_config.save(config, os.path.join(workdir, "config.json"))
  song, user, label = _world(config)
  truth = np.eye(10)[label]
  rng = np.random.default_rng(1000 + config.seed)
  told = {"audio_user": 0.5 if config.audio_user.fusion == "late" else 0.3,
          "user": 0.25, "oracle": 0.8}
  paths = {name: os.path.join(workdir, "predictions", f"test_{name}.csv")
           for name in ("groundtruth", "audio", *told)}
  tables.write_groundtruth(paths["groundtruth"], song, user, label)
  tables.write(paths["audio"], np.arange(_TRACKS),
               rng.uniform(size=(_TRACKS, 10)))
  for name, share in told.items():
    informed = rng.uniform(size=(len(song), 1)) < share
    tables.write(paths[name], song,
                 np.where(informed, truth, rng.dirichlet(np.ones(10),
                                                         len(song))), user)
  results = study.evaluate_csvs(study.CsvFiles(
      paths["groundtruth"],
      {name: paths[name] for name in ("audio", *told)}), _SETTINGS)
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump(results, f)


class _Stub:
  def __init__(self):
    self.runs = []
    self.kill = set()

  def __call__(self, config, workdir):
    self.runs.append(workdir)
    if os.path.basename(workdir) in self.kill:
      os.makedirs(workdir, exist_ok=True)
      run_config.save(config, os.path.join(workdir, "config.json"))
      raise KeyboardInterrupt
    _write_run(config, workdir)


def _results(path):
  with open(os.path.join(path, "results.json")) as f:
    return json.load(f)


def test_seed_groups_end_to_end(tmp_path, monkeypatch):
  config, workdir = smoke.get_config(), str(tmp_path)
  stub, lines = _Stub(), []
  monkeypatch.setattr(run, "reproduce", stub)
  vary = ["seed=2,0,1", "audio_user.fusion=late,concat"]
  stub.kill.add("fusion_concat")  # the first seed's second run, killed
  with pytest.raises(KeyboardInterrupt):
    sweep.run(config, workdir, sweep.make_axes(config, vary),
              log=lines.append)
  stub.kill.clear()
  result = sweep.run(config, workdir, sweep.make_axes(config, vary),
                     log=lines.append)
  assert len(stub.runs) == 2 + 5  # nothing but the killed run run twice
  assert [os.path.relpath(p, workdir) for p in stub.runs[:3]] == [
      "seed_2/fusion_late", "seed_2/fusion_concat", "seed_2/fusion_concat"]
  assert stub.runs[2:] == stub.runs[1:2] + [
      os.path.join(workdir, p) for p in ("seed_0/fusion_late",
                                         "seed_0/fusion_concat",
                                         "seed_1/fusion_late",
                                         "seed_1/fusion_concat")]
  assert any("seed 2, audio_user.fusion late (1 of 6)" in line
             and "finished earlier" in line for line in lines)
  assert [r["settings"] for r in result["runs"]][:2] == [
      {"seed": 0, "audio_user.fusion": "concat"},
      {"seed": 0, "audio_user.fusion": "late"}]
  assert all("user_influence" not in r for r in result["runs"])
  assert result["axes"][0] == {"key": "seed", "label": "seed",
                               "values": [2, 0, 1]}
  assert json.loads((tmp_path / "sweep.json").read_text()) == result

  groups = result["groups"]
  assert [g["settings"] for g in groups] == [{"audio_user.fusion": "concat"},
                                             {"audio_user.fusion": "late"}]
  for group in groups:
    assert group["seeds"] == [0, 1, 2] and group["test_users"] == "shared"
    fusion = group["settings"]["audio_user.fusion"]
    runs = [_results(tmp_path / f"seed_{s}" / f"fusion_{fusion}")
            for s in group["seeds"]]
    assert list(group["models"]) == list(_MODELS)
    for model, values in group["models"].items():
      for name, (kind, metric) in sweep.GROUP_METRICS.items():
        per_seed = [r[kind][model][metric] for r in runs]
        np.testing.assert_allclose(values[name]["per_seed"], per_seed,
                                   atol=1e-12)
        assert values[name]["mean"] == pytest.approx(np.mean(per_seed))
        low, high = values[name]["ci"]
        assert low <= values[name]["mean"] <= high
    assert list(group["comparisons"]) == [
        "audio_user_vs_audio", "user_vs_audio", "oracle_vs_audio",
        "audio_user_vs_user", "oracle_vs_audio_user", "oracle_vs_user"]
    for key, entry in group["comparisons"].items():
      a, _, b = key.partition("_vs_")
      f1 = entry["satisfaction_f1"]
      per_seed = [r["satisfaction"][a]["f1"] - r["satisfaction"][b]["f1"]
                  for r in runs]
      np.testing.assert_allclose(f1["per_seed"], per_seed, atol=1e-12)
      assert f1["difference"] == pytest.approx(np.mean(per_seed))
      assert f1["seeds_won"] == sum(d > 0 for d in per_seed)
      assert f1["seeds"] == 3
      if key in runs[0]["comparisons"]:  # results.json's own orientation
        np.testing.assert_allclose(
            f1["per_seed"], [r["comparisons"][key]["f1"]["difference"]
                             for r in runs], atol=1e-12)
  oracle = groups[1]["comparisons"]["oracle_vs_audio"]["satisfaction_f1"]
  assert oracle["seeds_won"] == 3 and oracle["ci"][0] > 0

  text = (tmp_path / "sweep.md").read_text()
  assert "# Sweep over seed, audio_user.fusion" in text
  assert "| seed | audio_user.fusion | audio | audio + user |" in text
  assert "### audio_user.fusion late" in text
  assert "Seeds 0, 1, 2; intervals resample the seeds and one draw of the" \
         " test users shared by the seeds." in text
  row = groups[1]["models"]["audio_user"]
  assert (f"| audio + user | {row['satisfaction_f1']['mean']:.3f} ["
          f"{row['satisfaction_f1']['ci'][0]:.3f}, ") in text
  assert "| oracle (true distribution) - audio | " in text
  assert " | 3 / 3 |" in text
  assert "`<workdir>/seed_<value>/fusion_<value>/`" in text
  assert (tmp_path / "sweep.png").read_bytes().startswith(b"\x89PNG")
  print(text)  # the example of the report: pytest -s


def test_one_seed_gives_the_runs_own_intervals(tmp_path, monkeypatch):
  """With shared users and one seed, the two-level interval is the run's
  one-level bootstrap of results.json, draw for draw."""
  monkeypatch.setattr(run, "reproduce", _Stub())
  config = smoke.get_config()
  result = sweep.run(config, str(tmp_path),
                     sweep.make_axes(config, ["seed=4"]))
  saved = _results(tmp_path / "seed_4")
  group = result["groups"][0]
  assert group["settings"] == {} and group["seeds"] == [4]
  for model, values in group["models"].items():
    np.testing.assert_allclose(values["satisfaction_f1"]["ci"],
                               saved["satisfaction"][model]["f1_ci"],
                               atol=1e-12)
    np.testing.assert_allclose(values["ranking_mrr"]["ci"],
                               saved["ranking"][model]["mrr_ci"], atol=1e-12)
  np.testing.assert_allclose(
      group["comparisons"]["audio_user_vs_user"]["ranking_mrr"]["ci"],
      saved["comparisons"]["audio_user_vs_user"]["mrr"]["ci"], atol=1e-12)
  assert "### All runs" in (tmp_path / "sweep.md").read_text()


def test_a_resplit_draws_users_within_each_seed(tmp_path, monkeypatch):
  monkeypatch.setattr(run, "reproduce", _Stub())
  config = smoke.get_config()
  axes = sweep.make_axes(config, [(sweep.INFLUENCE_KEY, (0.0, 1.0)),
                                  "seed=0,1"], split_strategy="cold_user")
  result = sweep.run(config, str(tmp_path), axes, split_strategy="cold_user")
  assert [r["workdir"] for r in result["runs"]] == [
      "influence_0/seed_0", "influence_0/seed_1", "influence_1/seed_0",
      "influence_1/seed_1"]
  assert [r["user_influence"] for r in result["runs"]] == [0.0, 0.0, 1.0, 1.0]
  groups = result["groups"]
  assert [g["settings"] for g in groups] == [{"world.user_influence": 0.0},
                                             {"world.user_influence": 1.0}]
  assert {g["test_users"] for g in groups} == {"per seed"}
  text = (tmp_path / "sweep.md").read_text()
  assert "### user_influence 0" in text and "drawn within each seed" in text
  assert "| user_influence | seed | audio |" in text
  assert sweep.plot(result).startswith(b"\x89PNG")  # numeric x: influence


def test_changed_or_missing_tables_are_named(tmp_path, monkeypatch):
  monkeypatch.setattr(run, "reproduce", _Stub())
  config, workdir = smoke.get_config(), str(tmp_path)
  sweep.run(config, workdir, sweep.make_axes(config, ["seed=0,1"]))
  table = tmp_path / "seed_1" / "predictions" / "test_user.csv"
  rows = table.read_text().splitlines()
  rows[1:] = rows[1:][::-1]  # the same rows, another order: still consistent
  table.write_text("\n".join(rows) + "\n")
  sweep.run(config, workdir, sweep.make_axes(config, ["seed=0,1"]))
  song, user, _ = _world(sweep.point_config(config, {"seed": 1}))
  tables.write(str(table), song, np.full((len(song), 10), 0.1), user)
  with pytest.raises(errors.UserError, match=r"test_user.csv: gives user's"
                     r" satisfaction f1 .* the tables changed after the"
                     r" evaluation; re-evaluate"):
    sweep.run(config, workdir, sweep.make_axes(config, ["seed=0,1"]))
  table.unlink()
  with pytest.raises(errors.UserError, match=r"test_user.csv: missing; the"
                     " sweep's seed groups need"):
    sweep.run(config, workdir, sweep.make_axes(config, ["seed=0,1"]))


def test_per_user_values_give_the_evaluations_means(tmp_path):
  config = smoke.get_config()
  _write_run(config, str(tmp_path))
  results = _results(tmp_path)
  ids, values = sweep.per_user_values(str(tmp_path), results)
  assert list(ids) == sorted(set(_world(config)[1]))
  assert list(values) == list(_MODELS)
  for model, per_user in values.items():
    assert per_user.shape == (len(ids), 2)
    assert per_user[:, 0].mean() == pytest.approx(
        results["satisfaction"][model]["f1"], abs=1e-12)
    assert per_user[:, 1].mean() == pytest.approx(
        results["ranking"][model]["mrr"], abs=1e-12)


def _launch(*args):
  return subprocess.run([sys.executable, "-m", "launch.sweep", *args],
                        capture_output=True, text=True, cwd=REPO)


@pytest.mark.slow
def test_launcher_refuses_bad_axes_in_one_line(tmp_path):
  for args, code, message in [
      (["--vary=seed"], 2, "error: flag --vary=['seed']: --vary 'seed' is"
       " not KEY=V1,V2,..."),
      (["--vary=sed=1"], 1, "error: --vary sed: unknown config key"),
      (["--vary=seed=1,x"], 1, "error: --vary seed: 'x' is not of type int"),
      (["--vary=world.track_sharpness=2",
        "--config.dataset=contextual_tags/zenodo"], 1,
       "error: config dataset='contextual_tags/zenodo': varying"
       " world.track_sharpness needs the simulated world"),
      (["--influences=0.5", "--vary=world.user_influence=1"], 1,
       "error: --vary world.user_influence is given twice"),
      (["--vary=audio.learning_rate=0"], 1,
       "error: sweep point learning_rate_0: config audio.learning_rate"),
  ]:
    done = _launch(f"--workdir={tmp_path}", *args)
    assert done.returncode == code, (args, done.stderr[-2000:])
    assert done.stderr.count("\n") == 1 and done.stderr.startswith(
        message), (args, done.stderr)
  assert not os.listdir(tmp_path)  # nothing run, nothing written


@pytest.mark.slow
def test_launcher_groups_real_runs_over_seeds(tmp_path):
  """Two smoke runs of the user-only model (seconds) that differ in their
  training seed alone: the same test users, per-seed values as evaluated."""
  done = _launch(f"--workdir={tmp_path}", "--vary=seed=1,0",
                 f"--config={os.path.join(REPO, 'launch/configs/smoke.py')}",
                 "--config.models=('user',)")
  assert done.returncode == 0, done.stderr[-3000:]
  result = json.loads((tmp_path / "sweep.json").read_text())
  assert [r["workdir"] for r in result["runs"]] == ["seed_0", "seed_1"]
  (group,) = result["groups"]
  assert group["seeds"] == [0, 1] and group["test_users"] == "shared"
  assert list(group["models"]) == ["user", "oracle"]
  saved = [_results(tmp_path / f"seed_{s}") for s in (0, 1)]
  np.testing.assert_allclose(
      group["models"]["user"]["satisfaction_f1"]["per_seed"],
      [r["satisfaction"]["user"]["f1"] for r in saved], atol=1e-12)
  # The oracle is the data's, not the training's: one value for both seeds.
  oracle = group["models"]["oracle"]["ranking_mrr"]["per_seed"]
  assert oracle[0] == oracle[1]
  assert "### All runs" in done.stdout
  assert "| oracle (true distribution) - user only |" in done.stdout
