r"""Indexes a catalog for recommendation: each track decoded once, with what
the run's models need to score any user on it.

  python -m launch.index --workdir=W --audio=FILE_OR_DIR --output=INDEX \
      [--workers=N] [--shard=K/N]
  python -m launch.index --workdir=W --split=test --output=INDEX

Files are searched recursively and indexed in chunks: a killed indexing
resumes from its finished chunks when run again. Undecodable and too-short
files are counted in INDEX/report.json and never stop the indexing. A
catalog too large for one machine is indexed by several processes, each
given --shard=K/N (K in 1..N) on the same --output (a shared filesystem):
each takes every N-th chunk, and the one that finds every chunk done merges
the index. --split indexes a split of the run's dataset without decoding.
The index is used by launch.recommend with the same run.
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
from ctxtag import files
from ctxtag import run
from launch import cli

_WORKDIR = flags.DEFINE_string("workdir", None, "A trained run.",
                               required=True)
cli.refuse_empty("workdir")
_AUDIO = flags.DEFINE_string("audio", None,
                             "An audio file or a directory of them.")
_SPLIT = flags.DEFINE_enum("split", None, ["train", "validation", "test"],
                           "A split of the run's dataset, instead of --audio.")
_OUTPUT = flags.DEFINE_string("output", None, "The index's directory.",
                              required=True)
cli.refuse_empty("output")
_WORKERS = flags.DEFINE_integer("workers", os.cpu_count() or 1,
                                "Processes decoding audio.", lower_bound=1)
_SHARD = flags.DEFINE_string(
    "shard", "1/1", "K/N: index the K-th of N shares of the chunks (a job"
    " array of N tasks covers the catalog).")
flags.register_validator("shard", lambda v: _valid_shard(v),
                         message="expected K/N with 1 <= K <= N")

flags.adopt_module_key_flags(cli)  # --debug, several hosts: in --helpshort


def _valid_shard(value: str) -> bool:
  try:
    catalog.parse_shard(value)
  except ValueError:
    return False
  return True


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if bool(_AUDIO.value) == bool(_SPLIT.value):
    raise app.UsageError("give --audio (files to index) or --split (a split"
                         " of the run's dataset), one of them")
  workdir, output = files.absolute(_WORKDIR.value), files.absolute(
      _OUTPUT.value)
  config = run.load_run_config(workdir)  # is it a run at all?
  if _SPLIT.value:
    report = catalog.index_split(config, workdir, run.run_dataset_path(
        workdir), _SPLIT.value, output)
  else:
    report = catalog.index_audio(config, workdir, _AUDIO.value, output,
                                 _WORKERS.value,
                                 catalog.parse_shard(_SHARD.value))
  if "chunks" in report:
    print(f"indexed this share: {report['chunks_done']} of"
          f" {report['chunks']} chunks of the catalog are done; the shard"
          " that finishes the last one merges the index")
    return
  reasons = ", ".join(f"{count} {reason}" for reason, count in sorted(
      report["skipped_by_reason"].items()))
  noted = len(report.get("decoder_notes") or [])
  print(f"indexed {report['indexed']} tracks into {output}"
        + (f"; skipped {report['skipped']} ({reasons}: see"
           f" {os.path.join(output, catalog.REPORT_FILE)})"
           if report["skipped"] else "")
        + (f"; the decoder wrote notes on {noted} indexed file(s) (see"
           f" {os.path.join(output, catalog.REPORT_FILE)})" if noted else ""))


if __name__ == "__main__":
  cli.run(main)
