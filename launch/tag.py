r"""Tags new audio with a trained run's best models.

  python -m launch.tag --workdir=W --audio=FILE_OR_DIR \
      [--user_id=U | --user_embedding=FILE.npy] [--top_k=3] [--output=OUT.json]
  python -m launch.tag --workdir=W --list_users

A known user (one of the run's users) gets the audio + user model; an unknown
user is reported and gets the audio model, as does no user. Folders are
searched recursively; unreadable or too-short files are listed under
"errors", entries that are not regular files (FIFOs, devices) under
"skipped", and the rest are still tagged. Without --output, stdout holds
the JSON alone (progress and notes go to stderr). Reads no dataset: the
run's workdir holds what tagging needs. Started on several processes
(--num_processes), each tags every file and process 0 alone prints and
writes.
"""

from ctxtag import interrupts

# Ahead of the imports below, which take seconds: a Ctrl-C during them is one
# line too, and a worker process that imports this module leaves it to the
# launcher (see interrupts.before_imports).
interrupts.before_imports(__name__)

# pylint: disable=g-import-not-at-top,wrong-import-position
import json
import os
import sys

from absl import app
from absl import flags

from ctxtag import distributed
from ctxtag import files
from ctxtag import inference
from ctxtag import run
from launch import cli

_WORKDIR = flags.DEFINE_string("workdir", None, "A trained run.",
                               required=True)
cli.refuse_empty("workdir")  # "" would be the current directory
_AUDIO = flags.DEFINE_string(
    "audio", None, "An audio file or a directory (required unless"
    " --list_users).")
_USER_ID = flags.DEFINE_integer(
    "user_id", None, "A user of the run's data (--list_users lists them).")
_LIST_USERS = flags.DEFINE_bool(
    "list_users", False, "Print how many users the run knows, the first few"
    " ids and the file holding them all, then exit.")
_USER_EMBEDDING = flags.DEFINE_string(
    "user_embedding", None, "A .npy file holding a 256-d user embedding.")
_TOP_K = flags.DEFINE_integer("top_k", 3, "Contexts listed per file.",
                              lower_bound=1, upper_bound=10)
_OUTPUT = flags.DEFINE_string("output", None,
                              "Where to write the JSON (default: stdout).")
_WORKERS = flags.DEFINE_integer("workers", os.cpu_count() or 1,
                                "Processes decoding audio.", lower_bound=1)

flags.adopt_module_key_flags(cli)  # --debug, several hosts: in --helpshort


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if _LIST_USERS.value:
    if _AUDIO.value:
      raise app.UsageError("--list_users lists the run's users and tags"
                           " nothing; drop --audio (or --list_users)")
    text = inference.list_users(_WORKDIR.value)
    if distributed.is_main():
      print(text)
    return
  if not _AUDIO.value:
    raise app.UsageError("--audio is required (an audio file or a directory"
                         " to tag), unless --list_users")
  if _USER_ID.value is not None and _USER_EMBEDDING.value:
    raise app.UsageError("give --user_id or --user_embedding, not both")
  config = run.load_run_config(_WORKDIR.value)
  embedding = (inference.read_embedding(_USER_EMBEDDING.value)
               if _USER_EMBEDDING.value else None)
  output = inference.tag(_WORKDIR.value, config, _AUDIO.value,
                         _USER_ID.value, embedding, _TOP_K.value,
                         _WORKERS.value)
  if not distributed.is_main():
    return
  # Notes go to stderr: stdout carries the JSON alone (`> out.json`,
  # `| jq`).
  for note in output["notes"]:
    print(f"note: {note}", file=sys.stderr, flush=True)
  text = json.dumps(output, indent=2)
  if _OUTPUT.value:
    files.write_text(_OUTPUT.value, text + "\n")
    skipped = (f", {len(output['skipped'])} skipped" if output["skipped"]
               else "")
    print(f"tagged {len(output['results'])} files"
          f" ({len(output['errors'])} errors{skipped}) -> {_OUTPUT.value}")
  else:
    print(text)
  if not output["results"]:
    # The JSON says what failed; the exit status says nothing was tagged.
    cli.fail(f"no file could be tagged ({len(output['errors'])} errors,"
             f" {len(output['skipped'])} skipped: see the JSON)",
             cli.ERROR_EXIT)


if __name__ == "__main__":
  cli.run(main)
