"""The builder's hook for the playlists source (`prepare`): the collection
rules 1-3 (`mining`), then 4-6 over the kept pairs: audio, embeddings and
the split."""

import os

import numpy as np

from ctxtag.sources import assemble
from ctxtag.sources import build_report
from ctxtag.sources import interactions as interactions_lib
from ctxtag.sources import pairs as pairs_lib
from ctxtag.sources import user_embeddings
from ctxtag.sources.playlists import mining
from ctxtag.sources.playlists import options as options_lib
from ctxtag.sources.playlists import reading

COMPUTED_EMBEDDINGS = "(computed from the playlists)"


def _computed_embeddings(mined: mining.MinedPairs, pairs: pairs_lib.Pairs,
                         seed: int) -> user_embeddings.UserEmbeddings:
  users = np.unique(pairs.user_id)
  vectors = interactions_lib.user_embeddings(mined.interactions, users,
                                             seed=seed)
  return user_embeddings.UserEmbeddings(
      path=COMPUTED_EMBEDDINGS,
      row_of_user={u: i for i, u in enumerate(users.tolist())},
      vectors_UxE=vectors, invalid={})


def prepare(manual_dir: str, options: options_lib.Options, split,
            cache_root: str, workers: int, report: build_report.BuildReport,
            beam_options=None) -> assemble.Prepared:
  """The collection rules in order, then the split.

  1-3 mine the playlists (`mine`); 4 drops kept tracks without usable audio,
  with their pairs, without filtering again; 5 drops users without a valid
  embedding when user_embeddings.csv is given, else embeds every user from
  the whole interaction matrix; 6 splits the pairs.

  Args:
    manual_dir: the playlists, the audio and optionally user_embeddings.csv.
    options: the source's settings.
    split: an `assemble.SplitSettings` (default: random).
    cache_root: directory for mel caches.
    workers: processes decoding audio.
    report: where skips are counted (or raised, under strict).
    beam_options: run the audio stage on Apache Beam with these options.

  Returns:
    Per split, the tracks with their pairs; each track's mel directory;
    for MPD slices, the URI id of each song id.
  """
  mined = mining.mine(reading.read_playlist_inputs(manual_dir),
                      options.rules(), report)
  stems = mined.song_uris
  table, mel_dirs = assemble.drop_tracks_without_mels(
      {"all": mined.pairs}, manual_dir, options, cache_root, workers, report,
      beam_options,
      stem_of_song=(lambda song_id: stems[song_id]) if stems else None)
  embeddings_path = os.path.join(manual_dir, user_embeddings.FILE)
  if os.path.exists(embeddings_path):
    embeddings = user_embeddings.read(embeddings_path)
    table = assemble.drop_users(table, embeddings, report)
  else:
    embeddings = _computed_embeddings(mined, table["all"],
                                      options.embedding_seed)
  return assemble.package(split.apply(table["all"]), embeddings, mel_dirs,
                          report, song_stems=stems,
                          strategy=split.strategy or "random")
