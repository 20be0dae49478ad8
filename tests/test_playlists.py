"""Tests for ctxtag.sources.playlists: reading, the collection rules, drops."""

import collections
import csv
import hashlib
import json
import re

import numpy as np
import pytest

from ctxtag import errors
from ctxtag import labels
from ctxtag.sources import build_report
from ctxtag.sources import playlists
from ctxtag.sources.playlists import mpd_reader

# The hand-made fixture: (playlist_id, user_id, title, songs). What the rules
# make of each track (defaults: 5-10 users, >= 3 contexts):
#   100  users 1 gym (twice: p1, p8), 2 gym, 3 sad, 4 night, 5 summer: kept
#   800  users 30 car, 31 happy, 32 relax, 33 relax, 34 car, 36 gym: kept;
#        u35's only 800 is in ambiguous playlists (1 pair lost), u30's
#        ambiguous playlist loses nothing (u30 has 800 as car)
#   600  users 1-4, and u5 with relax + car (conflicting): 4 users, too few
#   210  users 1, 2: too few users (and too few contexts; users win)
#   300  users 10-20, all running: too many users (and too few contexts)
#   400  users 1 gym, 2 gym, 3 sad, 6 gym, 7 sad: 5 users, 2 contexts
#   900  only in playlists without a context: interactions only
FIXTURE = [
    (1, 1, "GYM!!", [100, 400, 600, 210]),
    (2, 2, "gym-vibes", [100, 400, 600, 210]),
    (3, 3, "Sad songs", [100, 400, 600]),
    (4, 4, "Night drive", [100, 600]),
    (5, 5, "summer 2019", [100]),
    (6, 5, "relax", [600]),
    (7, 5, "car", [600]),
    (8, 1, "my gym songs", [100]),
    (9, 6, "Gym Time", [400]),
    (10, 7, "so sad", [400]),
    *[(20 + user, user, ("running", "Running!", "running 5k")[user % 3],
       [300]) for user in range(10, 21)],
    (50, 30, "car", [800]),
    (51, 31, "happy", [800]),
    (52, 32, "relax", [800]),
    (53, 33, "RELAX", [800]),
    (54, 34, "car", [800]),
    (55, 36, "Gym, gym, GYM", [800]),
    (60, 35, "Summer Night", [800]),
    (61, 30, "gym and workout", [800]),
    (62, 35, "summer night 2", [800]),
    (70, 1, "workouts", [100, 900]),
    (71, 2, "Tonight", [900]),
    (72, 3, "Carpool", [900]),
    (73, 40, "my mix", [900, 100]),
    (74, 41, "gym", []),
]
KEPT = {  # (song, user) -> context
    (100, 1): "gym", (100, 2): "gym", (100, 3): "sad", (100, 4): "night",
    (100, 5): "summer", (800, 30): "car", (800, 31): "happy",
    (800, 32): "relax", (800, 33): "relax", (800, 34): "car",
    (800, 36): "gym",
}
DROPPED = {  # reason -> (tracks, pairs, users)
    "ambiguous_title": (0, 1, 0),
    "conflicting_contexts": (0, 1, 0),
    "track_too_few_users": (2, 6, 0),
    "track_too_many_users": (1, 11, 0),
    "track_too_few_contexts": (1, 5, 0),
}


def _write_csvs(directory, rows, bom=True):
  """playlists.csv (with a byte-order mark) and playlist_tracks.csv."""
  with open(directory / "playlists.csv", "w", newline="",
            encoding="utf-8-sig" if bom else "utf-8") as f:
    writer = csv.writer(f)
    writer.writerow(["playlist_id", "user_id", "title"])
    writer.writerows((pid, user, title) for pid, user, title, _ in rows)
  with open(directory / "playlist_tracks.csv", "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["playlist_id", "song_id"])
    for pid, _, _, songs in rows:
      writer.writerows((pid, song) for song in songs)
  return directory


def _line(playlist_id):
  """The line of a fixture playlist in playlists.csv (after the header)."""
  return [row[0] for row in FIXTURE].index(playlist_id) + 2


def _mine(directory, rules=playlists.MiningRules(), strict=False):
  report = build_report.BuildReport(strict=strict)
  mined = playlists.mine(playlists.read_playlist_inputs(str(directory)),
                         rules, report)
  return mined, report


def _counts(report):
  return {reason: (entry["tracks"], entry["pairs"], entry["users"])
          for reason, entry in report.dropped.items()}


def test_fixture_kept_pairs_and_drops_are_exact(tmp_path):
  mined, report = _mine(_write_csvs(tmp_path, FIXTURE))
  kept = {(s, u): labels.LABELS[c] for s, u, c in zip(
      mined.pairs.song_id, mined.pairs.user_id, mined.pairs.label)}
  assert kept == KEPT
  assert _counts(report) == DROPPED
  assert report.dropped["track_too_many_users"]["examples"] == [300]
  assert report.dropped["track_too_few_users"]["examples"] == [210, 600]
  assert len(report.dropped["ambiguous_title"]["examples"]) == 3
  assert f"playlists.csv line {_line(60)}: Summer Night" in (
      report.dropped["ambiguous_title"]["examples"])
  # Sorted by song then user.
  order = np.lexsort((mined.pairs.user_id, mined.pairs.song_id))
  np.testing.assert_array_equal(order, np.arange(len(mined.pairs)))
  assert mined.stats["candidate_pairs"] == 35 == len(KEPT) + sum(
      pairs for _, pairs, _ in DROPPED.values())
  assert mined.stats["playlists"] == len(FIXTURE)
  assert mined.stats["ambiguous_playlists"] == 3
  assert mined.stats["context_playlists"] == len(FIXTURE) - 3 - 4
  assert mined.stats["kept_tracks"] == 2
  assert mined.song_uris is None


def test_interactions_hold_every_playlist(tmp_path):
  mined, _ = _mine(_write_csvs(tmp_path, FIXTURE))
  expected = {(user, song) for _, user, _, songs in FIXTURE for song in songs}
  got = set(zip(mined.interactions.user_id.tolist(),
                mined.interactions.song_id.tolist()))
  assert got == expected
  assert len(mined.interactions) == len(expected) == 40


def test_strict_raises_at_the_first_ambiguous_title(tmp_path):
  with pytest.raises(build_report.DefectError,
                     match=rf"playlists\.csv line {_line(60)}: title"
                     r" 'Summer Night' names several contexts"
                     r" \(night, summer\)"):
    _mine(_write_csvs(tmp_path, FIXTURE), strict=True)


def test_strict_names_the_playlists_of_a_conflict(tmp_path):
  rows = [row for row in FIXTURE if row[0] not in (60, 61, 62)]
  with pytest.raises(build_report.DefectError,
                     match=r"user 5, song 600 \(.*playlists\.csv line 7, .*"
                     r"playlists\.csv line 8\).*several contexts \(car,"
                     r" relax\)"):
    _mine(_write_csvs(tmp_path, rows), strict=True)


def test_thresholds_are_configurable(tmp_path):
  rules = playlists.MiningRules(min_users=2, max_users=11, min_contexts=1)
  mined, report = _mine(_write_csvs(tmp_path, FIXTURE), rules)
  assert sorted(set(mined.pairs.song_id.tolist())) == [100, 210, 300, 400,
                                                       600, 800]
  assert "track_too_few_users" not in report.dropped
  assert len(mined.pairs) == len(KEPT) + 6 + 11 + 5


@pytest.mark.parametrize("title,context", [
    ("GYM!!", "gym"), ("gym-vibes", "gym"), ("my gym songs", "gym"),
    ("workouts", None), ("Tonight", None), ("Carpool", None),
    ("gym gym GYM", "gym"), ("night-night", "night"), ("work", "work"),
    ("Workout", "workout"), ("", None),
    ("Gym and Workout", "ambiguous"), ("summer night", "ambiguous"),
    # Normalised: NFKC (full-width letters), case-folded; digits and "_"
    # separate words; a hyphenated word that joins into a keyword reads as
    # it, else its parts are words.
    ("ｇｙｍ", "gym"), ("ＧＹＭ ｓｏｎｇｓ", "gym"), ("gym_songs", "gym"),
    ("gym2", "gym"), ("2gym", "gym"), ("my_gym_2024", "gym"),
    ("work-out mix", "workout"), ("WORK-OUT", "workout"),
    ("pre-work-out", "workout"), ("run-ning", "running"),
    ("summer-night", "ambiguous"), ("work-out-gym", "ambiguous"),
    ("work_out", "work"), ("gymnastics", None), ("carpool_2", None),
    ("Ｓｕｍｍｅｒ", "summer"), ("ＷＯＲＫ－ＯＵＴ", "workout"),
])
def test_keywords_match_whole_words_case_insensitively(title, context):
  got = playlists.title_contexts([title])[0]
  expected = {None: playlists.NO_CONTEXT,
              "ambiguous": playlists.AMBIGUOUS}.get(
                  context, labels.LABEL_INDEX.get(context))
  assert got == expected


def test_custom_keywords_are_normalised_like_titles():
  rules = playlists.MiningRules(keywords=["GYM", "Ｔｒａｉｎｉｎｇ=workout",
                                          "post-workout=workout"])
  got = playlists.title_contexts(
      ["gym", "training_2", "TRAINING", "post-workout", "post-work-out",
       "work-out"], rules)
  np.testing.assert_array_equal(got, [
      labels.LABEL_INDEX["gym"], labels.LABEL_INDEX["workout"],
      labels.LABEL_INDEX["workout"], labels.LABEL_INDEX["workout"],
      playlists.NO_CONTEXT, playlists.NO_CONTEXT])


def test_custom_keywords_map_to_labels():
  rules = playlists.MiningRules(keywords=["gym", "training=workout",
                                          "workout", "Road Trip=car"])
  got = playlists.title_contexts(
      ["workout training", "gym training", "car", "ROAD TRIP!", "roadtrip"],
      rules)
  np.testing.assert_array_equal(got, [
      labels.LABEL_INDEX["workout"], playlists.AMBIGUOUS,
      playlists.NO_CONTEXT, labels.LABEL_INDEX["car"], playlists.NO_CONTEXT])


@pytest.mark.parametrize("settings,message", [
    ({"keywords": ("dance",)}, "'dance' maps to 'dance', which is not a"),
    ({"keywords": ("=gym",)}, "must start and end with a letter"),
    ({"keywords": ()}, "keywords is empty"),
    ({"keywords": ("x=gym", "x=sad")}, "'x' maps to two labels"),
    ({"min_users": 0}, "min_users must be an integer >= 1"),
    ({"min_users": 6, "max_users": 5}, "max_users=5 is below min_users=6"),
    ({"min_contexts": 11}, "min_contexts must be at most 10"),
])
def test_invalid_rules_are_config_errors(settings, message):
  with pytest.raises(errors.ConfigError, match=re.escape(message)):
    playlists.MiningRules(**settings)


def _reference(rows, rules):
  """The rules written out naively, one dict at a time."""
  mapping = rules.keyword_labels()

  def context(title):
    found = {label for keyword, label in mapping.items() if re.search(
        rf"\b{re.escape(keyword)}\b", title, re.IGNORECASE)}
    return found.pop() if len(found) == 1 else (-2 if found else -1)

  sets = collections.defaultdict(set)
  for _, user, title, songs in rows:
    if context(title) >= 0:
      for song in songs:
        sets[(user, song)].add(context(title))
  dropped = collections.Counter()
  lost = set()
  for _, user, title, songs in rows:
    if context(title) == -2:
      lost |= {(user, s) for s in songs if (user, s) not in sets}
  dropped[("ambiguous_title", "pairs")] = len(lost)
  single = {key: next(iter(c)) for key, c in sets.items() if len(c) == 1}
  dropped[("conflicting_contexts", "pairs")] = len(sets) - len(single)
  kept = {}
  for song in {s for _, s in single}:
    users = {u: c for (u, s), c in single.items() if s == song}
    if len(users) < rules.min_users:
      reason = "track_too_few_users"
    elif len(users) > rules.max_users:
      reason = "track_too_many_users"
    elif len(set(users.values())) < rules.min_contexts:
      reason = "track_too_few_contexts"
    else:
      kept.update({(song, u): c for u, c in users.items()})
      continue
    dropped[(reason, "tracks")] += 1
    dropped[(reason, "pairs")] += len(users)
  return kept, {key: n for key, n in dropped.items() if n}


def test_vectorised_rules_match_a_naive_reference(tmp_path):
  rng = np.random.default_rng(0)
  titles = ["gym", "Sad!", "late night", "summer vibes", "car", "relax",
            "my mix", "workouts", "Summer Night", "happy happy", "work",
            "gym & running", "Tonight", "running"]
  rows = [(pid, int(rng.integers(80)), str(rng.choice(titles)),
           sorted(set(rng.integers(0, 150, rng.integers(0, 9)).tolist())))
          for pid in range(400)]
  rules = playlists.MiningRules(min_users=3, max_users=6, min_contexts=2)
  mined, report = _mine(_write_csvs(tmp_path, rows), rules)
  kept, dropped = _reference(rows, rules)
  got = {(s, u): c for s, u, c in zip(mined.pairs.song_id.tolist(),
                                      mined.pairs.user_id.tolist(),
                                      mined.pairs.label.tolist())}
  assert got == kept
  got_dropped = {(reason, kind): entry[kind]
                 for reason, entry in report.dropped.items()
                 for kind in ("tracks", "pairs") if entry[kind]}
  assert got_dropped == dropped
  # Every reason occurs, most more often than the report has examples.
  assert set(report.dropped) == set(DROPPED)
  assert all(len(e["examples"]) <= build_report.MAX_EXAMPLES
             for e in report.dropped.values())


def _write(path, text, encoding="utf-8"):
  path.write_bytes(text.encode(encoding) if isinstance(text, str) else text)


@pytest.mark.parametrize("playlists_csv,tracks_csv,message", [
    ("playlist_id,user_id\n1,1\n", "playlist_id,song_id\n",
     r"playlists\.csv line 1: missing column\(s\) title"),
    ("playlist_id,user_id,title\n1,1,gym\n", "playlist,song_id\n",
     r"playlist_tracks\.csv line 1: missing column\(s\) playlist_id"),
    ("playlist_id,user_id,title\n1,1,gym\n",
     "playlist_id,song_id\n1,100\n\n99,5\n",
     r"playlist_tracks\.csv line 4: playlist_id 99 is not in .*playlists"),
    ("playlist_id,user_id,title\n1,1,gym\n2,abc,sad\n",
     "playlist_id,song_id\n",
     r"playlists\.csv line 3: user_id must be an integer, got 'abc'"),
    ("playlist_id,user_id,title\n1,1,gym\n2,2\n", "playlist_id,song_id\n",
     r"playlists\.csv line 3: 2 field\(s\), expected the columns"),
    ("playlist_id,user_id,title\n1,1,gym\n", "playlist_id,song_id\n1,x\n",
     r"playlist_tracks\.csv line 2: song_id must be an integer, got 'x'"),
    ("playlist_id,user_id,title\n1,1,gym\n",
     "playlist_id,song_id\n1,99999999999999999999\n",
     r"playlist_tracks\.csv line 2: song_id 99999999999999999999 is beyond"),
    ("playlist_id,user_id,title\n1,1,gym\n2,2,sad\n1,3,car\n",
     "playlist_id,song_id\n",
     r"playlists\.csv line 4: playlist_id 1 repeats line 2"),
    (b"playlist_id,user_id,title\n1,1,gym\n2,2,caf\xe9\n",
     "playlist_id,song_id\n",
     r"playlists\.csv line 3: a byte that is not UTF-8"),
    ("", "playlist_id,song_id\n",
     r"playlists\.csv line 1: missing column\(s\) playlist_id, user_id,"
     r" title"),
])
def test_bad_input_is_an_error_naming_file_and_line(tmp_path, playlists_csv,
                                                    tracks_csv, message):
  _write(tmp_path / "playlists.csv", playlists_csv)
  _write(tmp_path / "playlist_tracks.csv", tracks_csv)
  with pytest.raises(playlists.PlaylistError, match=message):
    playlists.read_playlist_inputs(str(tmp_path))


def test_missing_files_name_the_layouts(tmp_path):
  with pytest.raises(playlists.PlaylistError,
                     match=r"playlists\.csv: no such file; expected"):
    playlists.read_playlist_inputs(str(tmp_path))
  _write(tmp_path / "playlists.csv", "playlist_id,user_id,title\n")
  with pytest.raises(playlists.PlaylistError,
                     match=r"playlist_tracks\.csv: no such file"):
    playlists.read_playlist_inputs(str(tmp_path))
  _write(tmp_path / "mpd.slice.0-999.json", '{"playlists": []}')
  with pytest.raises(playlists.PlaylistError, match="keep one layout"):
    playlists.read_playlist_inputs(str(tmp_path))


def test_empty_tables_mine_nothing(tmp_path):
  mined, report = _mine(_write_csvs(tmp_path, []))
  assert len(mined.pairs) == 0 and len(mined.interactions) == 0
  assert not report.dropped


def _slice(path, playlist_list):
  path.write_text(json.dumps({"info": {}, "playlists": playlist_list}))


def _mpd_playlist(pid, name, uri_ids):
  return {"pid": pid, "name": name, "num_tracks": len(uri_ids),
          "tracks": [{"pos": i, "track_uri": f"spotify:track:{u}"}
                     for i, u in enumerate(uri_ids)]}


def test_mpd_slices_get_stable_song_ids_and_their_mapping(tmp_path):
  _slice(tmp_path / "mpd.slice.0-1.json",
         [_mpd_playlist(0, "Gym", ["AAA", "BBB"]),
          _mpd_playlist(1, "chill", ["AAA"])])
  _slice(tmp_path / "mpd.slice.2-2.json",
         [_mpd_playlist(2, "gym!!", ["CCC", "AAA"])])
  first = playlists.read_playlist_inputs(str(tmp_path))
  second = playlists.read_playlist_inputs(str(tmp_path))
  np.testing.assert_array_equal(first.track_song, second.track_song)

  def expected_id(uri_id):
    digest = hashlib.sha256(uri_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") & (2**63 - 1)

  ids = {u: expected_id(u) for u in ("AAA", "BBB", "CCC")}
  assert first.song_uris == {song: u for u, song in ids.items()}
  np.testing.assert_array_equal(first.user_id, [0, 1, 2])
  assert first.where(2, short=True) == "mpd.slice.2-2.json playlists[0] (pid 2)"
  rules = playlists.MiningRules(min_users=1, min_contexts=1)
  mined = playlists.mine(first, rules, build_report.BuildReport())
  got = set(zip(mined.pairs.song_id.tolist(), mined.pairs.user_id.tolist(),
                mined.pairs.label.tolist()))
  gym = labels.LABEL_INDEX["gym"]
  assert got == {(ids["AAA"], 0, gym), (ids["BBB"], 0, gym),
                 (ids["AAA"], 2, gym), (ids["CCC"], 2, gym)}
  assert mined.song_uris == first.song_uris
  assert len(mined.interactions) == 5


@pytest.mark.parametrize("playlist,message", [
    ({"pid": 5, "name": 7, "tracks": []},
     r"mpd\.slice\.0-1\.json playlists\[1\] \(pid 5\): name must be text,"
     " got 7"),
    ({"pid": "5", "name": "gym", "tracks": []}, "pid must be an int64"),
    ({"pid": 5, "name": "gym", "tracks": [{"track_uri": 3}]},
     r"playlists\[1\]\.tracks\[0\] \(pid 5\): track_uri must be text"),
    ({"pid": 5, "name": "gym", "tracks": [{"track_uri": "spotify:track:"}]},
     "has no usable id"),
    ({"pid": 0, "name": "gym", "tracks": []},
     r"playlists\[1\]: pid 0 repeats .*playlists\[0\]"),
])
def test_bad_mpd_slices_are_errors_naming_the_playlist(tmp_path, playlist,
                                                       message):
  _slice(tmp_path / "mpd.slice.0-1.json",
         [_mpd_playlist(0, "gym", ["AAA"]), playlist])
  with pytest.raises(playlists.PlaylistError, match=message):
    playlists.read_playlist_inputs(str(tmp_path))


def test_mpd_invalid_json_names_the_line(tmp_path):
  (tmp_path / "a.json").write_text('{"playlists": [\n  {"pid": 1,,}\n]}')
  with pytest.raises(playlists.PlaylistError,
                     match=r"a\.json line 2: not valid JSON"):
    playlists.read_playlist_inputs(str(tmp_path))


def test_song_id_collisions_are_errors(tmp_path, monkeypatch):
  monkeypatch.setattr(mpd_reader, "song_id_of_uri", lambda uri_id: 7)
  _slice(tmp_path / "s.json", [_mpd_playlist(0, "gym", ["AAA", "BBB"])])
  with pytest.raises(playlists.PlaylistError,
                     match="'AAA' and 'BBB' hash to the same song id 7"):
    playlists.read_playlist_inputs(str(tmp_path))
