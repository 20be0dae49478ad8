r"""Tags new audio with a trained run's best models.

  python -m launch.tag --workdir=W --audio=FILE_OR_DIR \
      [--user_id=U | --user_embedding=FILE.npy] [--top_k=3] [--output=OUT.json]

A known user (one of the run's users) gets the audio + user model; an unknown
user is reported and gets the audio model, as does no user. Folders are
searched recursively; unreadable or too-short files are listed under
"errors" and the rest are still tagged. Reads no dataset: the run's workdir
holds what tagging needs. Started on several processes (--num_processes),
each tags every file and process 0 alone prints and writes.
"""

import json
import os

from absl import app
from absl import flags

from ctxtag import distributed
from ctxtag import files
from ctxtag import inference
from launch import common

_WORKDIR = flags.DEFINE_string("workdir", None, "A trained run.",
                               required=True)
_AUDIO = flags.DEFINE_string("audio", None, "An audio file or a directory.",
                             required=True)
_USER_ID = flags.DEFINE_integer("user_id", None, "A user of the run's data.")
_USER_EMBEDDING = flags.DEFINE_string(
    "user_embedding", None, "A .npy file holding a 256-d user embedding.")
_TOP_K = flags.DEFINE_integer("top_k", 3, "Contexts listed per file.",
                              lower_bound=1, upper_bound=10)
_OUTPUT = flags.DEFINE_string("output", None,
                              "Where to write the JSON (default: stdout).")
_WORKERS = flags.DEFINE_integer("workers", os.cpu_count() or 1,
                                "Processes decoding audio.", lower_bound=1)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if _USER_ID.value is not None and _USER_EMBEDDING.value:
    raise app.UsageError("give --user_id or --user_embedding, not both")
  common.quiet_library_logs()
  config = common.load_run_config(_WORKDIR.value)
  embedding = (inference.read_embedding(_USER_EMBEDDING.value)
               if _USER_EMBEDDING.value else None)
  output = inference.tag(_WORKDIR.value, config, _AUDIO.value,
                         _USER_ID.value, embedding, _TOP_K.value,
                         _WORKERS.value)
  if not distributed.is_main():
    return
  for note in output["notes"]:
    print(f"note: {note}", flush=True)
  text = json.dumps(output, indent=2)
  if _OUTPUT.value:
    files.write_text(_OUTPUT.value, text + "\n")
    print(f"tagged {len(output['results'])} files"
          f" ({len(output['errors'])} errors) -> {_OUTPUT.value}")
  else:
    print(text)


if __name__ == "__main__":
  from launch import cli  # pylint: disable=g-import-not-at-top
  cli.run(main)
