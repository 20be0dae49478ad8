r"""Recommends: the tracks of a catalog index a user is most likely to give
a context, best first.

  python -m launch.recommend --workdir=W --index=INDEX \
      (--user_id=U[,U...] | --user_embedding=F.npy) --context=gym[,run...] \
      [--top_k=20] [--compare] [--output=playlist.json | playlist.m3u]

Every (user, context) given is one query of one batch. A known user (one
of the run's users, or an embedding) is ranked by the run's personalised
model (the late fusion: its probability of the context for that user); an
unknown user gets the audio model's ranking, with a note. --compare adds
the audio model's ranking and the share of the two top-k lists in common.
The index must come from this run (launch.index): another run's is refused.
Without --output the ranking is printed; with it, a .json holds every
query and a .m3u the first query's playlist (an index of audio files).
"""

from ctxtag import interrupts

# Ahead of the imports below, which take seconds: a Ctrl-C during them is one
# line too, and a worker process that imports this module leaves it to the
# launcher (see interrupts.before_imports).
interrupts.before_imports(__name__)

# pylint: disable=g-import-not-at-top,wrong-import-position
import os

from absl import app
from absl import flags

from ctxtag import catalog
from ctxtag import errors
from ctxtag import files
from ctxtag import inference
from ctxtag import labels
from ctxtag import recommend
from ctxtag import run
from launch import cli

_WORKDIR = flags.DEFINE_string("workdir", None, "A trained run.",
                               required=True)
cli.refuse_empty("workdir")
_INDEX = flags.DEFINE_string("index", None, "The run's catalog index"
                             " (launch.index).", required=True)
cli.refuse_empty("index")
_USER_IDS = flags.DEFINE_list("user_id", [], "Users of the run's data.")
_USER_EMBEDDING = flags.DEFINE_string(
    "user_embedding", None, "A .npy file holding a 256-d user embedding.")
_CONTEXTS = flags.DEFINE_list(
    "context", None, "Contexts, of: " + ", ".join(labels.LABELS) + ".",
    required=True)
_TOP_K = flags.DEFINE_integer("top_k", 20, "Tracks per query.",
                              lower_bound=1)
_COMPARE = flags.DEFINE_bool("compare", False, "Add the audio model's"
                             " ranking and the overlap of the two lists.")
_MODEL = flags.DEFINE_string("model", None, "The personalised model (default:"
                             " the run's first indexed pair model).")
_OUTPUT = flags.DEFINE_string("output", None, "A .json or .m3u file.")

flags.adopt_module_key_flags(cli)  # --debug, several hosts: in --helpshort


def _queries() -> list[recommend.Query]:
  for context in _CONTEXTS.value:
    if context not in labels.LABELS:
      raise app.UsageError(f"--context={context}: expected one of"
                           f" {', '.join(labels.LABELS)}")
  if _USER_IDS.value and _USER_EMBEDDING.value:
    raise app.UsageError("give --user_id or --user_embedding, not both")
  if _USER_EMBEDDING.value:
    embedding = inference.read_embedding(_USER_EMBEDDING.value)
    return [recommend.Query(c, None, embedding) for c in _CONTEXTS.value]
  users = []
  for text in _USER_IDS.value or [None]:
    if text is not None and not text.lstrip("-").isdigit():
      raise app.UsageError(f"--user_id={text}: expected an integer id")
    users.append(None if text is None else int(text))
  return [recommend.Query(c, u) for u in users for c in _CONTEXTS.value]


def _text(answer: dict) -> str:
  lines = []
  for entry in answer["results"]:
    who = ("no user" if entry["user_id"] is None and "note" not in entry
           else f"user {entry['user_id']}" if entry["user_id"] is not None
           else "the given embedding")
    lines.append(f"{entry['context']} for {who} ({entry['model']}):")
    if "note" in entry:
      lines.append(f"  note: {entry['note']}")
    audio = entry.get("audio", {}).get("tracks", [])
    for rank, track in enumerate(entry["tracks"], 1):
      line = f"  {rank:>3}. {track['score']:.4f}  {track['track']}"
      if audio:
        other = audio[rank - 1]
        line = f"{line:<60}  audio: {other['score']:.4f}  {other['track']}"
      lines.append(line)
    if "overlap" in entry:
      lines.append(f"  top-{len(entry['tracks'])} overlap with the audio"
                   f" model's: {entry['overlap']:.0%}")
  return "\n".join(lines)


def _m3u(answer: dict, index: catalog.Index) -> str:
  root = index.meta.get("root")
  if not root:
    raise errors.UserError(
        f"--output={_OUTPUT.value}: a playlist needs an index of audio files;"
        f" {index.directory} indexes a split (song ids): write .json")
  entry = answer["results"][0]
  return "#EXTM3U\n" + "".join(
      f"#EXTINF:-1,{entry['context']} {t['score']:.4f}\n"
      f"{os.path.join(root, t['track'])}\n" for t in entry["tracks"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if _OUTPUT.value and not _OUTPUT.value.endswith((".json", ".m3u")):
    raise app.UsageError(f"--output={_OUTPUT.value}: expected a .json or"
                         " .m3u file")
  queries = _queries()
  workdir = files.absolute(_WORKDIR.value)
  config = run.load_run_config(workdir)
  index = catalog.load(_INDEX.value)
  if _TOP_K.value > index.num_tracks:
    raise app.UsageError(f"--top_k={_TOP_K.value}: the index holds"
                         f" {index.num_tracks} tracks; expected at most"
                         f" {index.num_tracks}")
  recommender = recommend.Recommender(config, workdir, index, _MODEL.value)
  answer = recommender.answer(queries, _TOP_K.value, _COMPARE.value)
  if _OUTPUT.value and _OUTPUT.value.endswith(".m3u"):
    files.write_text(_OUTPUT.value, _m3u(answer, index))
  elif _OUTPUT.value:
    files.write_json(_OUTPUT.value, answer)
  print(_text(answer))
  if _OUTPUT.value:
    print(f"wrote {_OUTPUT.value}")


if __name__ == "__main__":
  cli.run(main)
