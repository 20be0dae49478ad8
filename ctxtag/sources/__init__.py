"""Sources of contextual-tag data, one module each; no TFDS in here.

Each source turns its inputs into the builder's track examples: per split,
each track with its (user, context) pairs, and the track's log-mel. The
TFDS builder (tfds_builders/contextual_tags) picks a source by its config.

  simulated        a seeded simulated world rendered to audio
  zenodo           the paper's public CSVs with users' own audio or npz mels
  build_report     defects counted per reason, or raised under --strict
  options          "key=value" overrides of a source's settings
"""
