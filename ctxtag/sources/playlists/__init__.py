r"""Contexts mined from users' own playlists: the paper's collection method.

Inputs, in the manual dir, one of two layouts (`reading`):
  playlists.csv        playlist_id,user_id,title   (one row a playlist)
  playlist_tracks.csv  playlist_id,song_id         (one row a track in one)
or Million Playlist Dataset slices, `*.json` holding
  {"playlists": [{"pid": 7, "name": "gym", "tracks": [{"track_uri": ...}]}]}
where each playlist is its own user (user_id = pid) and each track URI gets a
stable int64 song id (`song_id_of_uri`); the URI's id part (after the last
":") names the track's audio, `audio/<uri id>.<ext>`, and the mapping song
id -> URI id comes back with the inputs so it can be kept beside the dataset.
Extra columns or JSON keys are ignored; blank CSV lines are skipped.

The collection rules (docs/paper.md; thresholds in `MiningRules`):
  1. A playlist's context is the keyword found in its title as a whole word
     (`title_contexts`): title and keywords are Unicode-NFKC-normalised and
     case-folded ("GYM!!", full-width "ｇｙｍ"), and words are runs of letters,
     so digits and "_" separate them too ("gym_songs", "gym2", "gym-vibes",
     "my gym songs"; not "workouts", "Tonight", "Carpool"). A hyphenated
     word whose parts join into a keyword reads as it ("work-out mix":
     workout, not work). A title without a keyword is not a context
     playlist; one naming two or more different contexts is ambiguous and
     skipped (counted). The same keyword twice is fine.
  2. Each (user, song) in that user's context playlists gets the set of
     their contexts: exactly one makes a pair; several make it conflicting,
     and it is dropped (counted).
  3. A track is kept when its pairs come from `min_users` to `max_users`
     distinct users and carry at least `min_contexts` distinct contexts; one
     pass, no iteration.

Every dropped pair is counted under exactly one reason of the build report:
  ambiguous_title         a playlist whose title names several contexts; its
                          pairs are those of its (user, song) entries that no
                          unambiguous context playlist of the user gives
                          (each counted once, under the first such playlist);
  conflicting_contexts    a (user, song) with several contexts, one pair each;
  track_too_few_users     a track with pairs from fewer than min_users users;
  track_too_many_users    ... from more than max_users users;
  track_too_few_contexts  ... with the users right but too few contexts.
A track failing several track rules is counted under the first of the three
in that order (users before contexts). The report's "users" stay 0: these
rules take out pairs and tracks, never a user as such.

Bad input that is not a rule's case (a missing file or column, an
unparsable id, a playlist id of playlist_tracks.csv without a playlist, a
repeated playlist id, a title that is not text, a byte that is not UTF-8)
is a `PlaylistError` naming the file and row.

Shape suffixes here: `_L` playlists (rows of the playlist arrays), `_E`
track entries, `_S` songs, `_N` items counted; elsewhere in ctxtag `_P`
means pairs, which these modules leave unsuffixed.

Modules:
  inputs       PlaylistInputs, PlaylistError, the layouts' file names
  csv_reader   playlists.csv + playlist_tracks.csv
  mpd_reader   Million Playlist Dataset slices; song ids of track URIs
  reading      which layout a manual dir holds; what it must hold
  options      MiningRules and the source's --option settings
  titles       rule 1: the context a title names
  mining       rules 1-3 over the whole table; drops counted
  dataset      the builder's hook: mining, audio, embeddings, split
"""

from ctxtag.sources.playlists.dataset import COMPUTED_EMBEDDINGS
from ctxtag.sources.playlists.dataset import prepare
from ctxtag.sources.playlists.inputs import MPD_PATTERN
from ctxtag.sources.playlists.inputs import PLAYLIST_TRACKS_COLUMNS
from ctxtag.sources.playlists.inputs import PLAYLIST_TRACKS_FILE
from ctxtag.sources.playlists.inputs import PLAYLISTS_COLUMNS
from ctxtag.sources.playlists.inputs import PLAYLISTS_FILE
from ctxtag.sources.playlists.inputs import PlaylistError
from ctxtag.sources.playlists.inputs import PlaylistInputs
from ctxtag.sources.playlists.mining import AMBIGUOUS_TITLE
from ctxtag.sources.playlists.mining import CONFLICTING_CONTEXTS
from ctxtag.sources.playlists.mining import MinedPairs
from ctxtag.sources.playlists.mining import mine
from ctxtag.sources.playlists.mining import TRACK_REASONS
from ctxtag.sources.playlists.mining import TRACK_TOO_FEW_CONTEXTS
from ctxtag.sources.playlists.mining import TRACK_TOO_FEW_USERS
from ctxtag.sources.playlists.mining import TRACK_TOO_MANY_USERS
from ctxtag.sources.playlists.mpd_reader import song_id_of_uri
from ctxtag.sources.playlists.options import MiningRules
from ctxtag.sources.playlists.options import Options
from ctxtag.sources.playlists.reading import expected_files
from ctxtag.sources.playlists.reading import input_tables
from ctxtag.sources.playlists.reading import MANUAL_DOWNLOAD_INSTRUCTIONS
from ctxtag.sources.playlists.reading import read_playlist_inputs
from ctxtag.sources.playlists.titles import AMBIGUOUS
from ctxtag.sources.playlists.titles import NO_CONTEXT
from ctxtag.sources.playlists.titles import normalize
from ctxtag.sources.playlists.titles import title_contexts
