r"""Speed and memory of building contextual_tags/zenodo from 30 s audio.

  python -m benchmarks.zenodo_build [--tracks=40] [--scale=4] [--format=mp3]

Writes a synthetic release shaped like the paper's (30 s 44.1 kHz stereo
previews, 5 to 10 users a track) of `tracks` and `scale * tracks` tracks,
then builds it in fresh processes: 1 and 2 workers (tracks/s), the peak
memory of the build process and of its workers at both sizes (flat memory:
the mels never gather in one process), and the Beam build (DirectRunner,
2 worker processes) against the plain one. Every build starts with an empty
mel cache.
"""

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags
from ctxtag import datasets

_TRACKS = flags.DEFINE_integer("tracks", 40, "Tracks of the small release.")
_SCALE = flags.DEFINE_integer("scale", 4, "The large release is this many"
                              " times bigger.")
_FORMAT = flags.DEFINE_enum("format", "mp3", ["mp3", "wav", "flac", "ogg"],
                            "Audio format of the synthetic previews.")
_ONE = flags.DEFINE_string("one", None, "Internal: run one build, as JSON"
                           " {manual, data, workers, beam}.")


def _one_build(spec: dict) -> dict:
  beam_options = None
  if spec["beam"]:
    from apache_beam.options import pipeline_options  # pylint: disable=g-import-not-at-top
    beam_options = pipeline_options.PipelineOptions([
        "--runner=DirectRunner", "--direct_num_workers=2",
        "--direct_running_mode=multi_processing"])
  start = time.time()
  datasets.build("contextual_tags/zenodo", spec["data"], spec["manual"],
               workers=spec["workers"], beam_options=beam_options)
  return {
      "seconds": time.time() - start,
      "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
      "worker_peak_mb": resource.getrusage(
          resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
  }


def _run(manual: str, workers: int, beam: bool = False) -> dict:
  data = tempfile.mkdtemp(prefix="ctxtag-bench-data-")
  try:
    spec = json.dumps({"manual": manual, "data": data, "workers": workers,
                       "beam": beam})
    output = subprocess.run(
        [sys.executable, "-m", "benchmarks.zenodo_build", f"--one={spec}"],
        check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])
  finally:
    shutil.rmtree(data)


def main(argv):
  del argv
  if _ONE.value:
    print(json.dumps(_one_build(json.loads(_ONE.value))))
    return
  from tests import zenodo_fixture  # pylint: disable=g-import-not-at-top
  root = tempfile.mkdtemp(prefix="ctxtag-bench-")
  try:
    sizes = (_TRACKS.value, _SCALE.value * _TRACKS.value)
    rows = []
    for size in sizes:
      start = time.time()
      manual = zenodo_fixture.write_synthetic_release(
          os.path.join(root, f"release{size}"), size, 30.0, _FORMAT.value)
      print(f"wrote {size} tracks of 30 s {_FORMAT.value} in"
            f" {time.time() - start:.0f} s", flush=True)
      for workers in (1, 2):
        result = _run(manual, workers)
        rows.append((f"plain, {workers} worker(s)", size, result))
        print(rows[-1], flush=True)
    beam = _run(os.path.join(root, f"release{sizes[0]}"), 2, beam=True)
    rows.append(("Beam DirectRunner, 2 processes", sizes[0], beam))
    print(f"\n{'build':<32} {'tracks':>6} {'seconds':>8} {'tracks/s':>9}"
          f" {'peak MB':>8} {'worker peak MB':>15}")
    for name, size, r in rows:
      print(f"{name:<32} {size:>6} {r['seconds']:>8.1f}"
            f" {size / r['seconds']:>9.2f} {r['peak_mb']:>8.0f}"
            f" {r['worker_peak_mb']:>15.0f}")
  finally:
    shutil.rmtree(root)


if __name__ == "__main__":
  app.run(main)
