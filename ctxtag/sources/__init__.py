"""Sources of contextual-tag data, one module (or package) each; no TFDS in here.

Each source turns its inputs into the builder's track examples: per split,
each track with its (user, context) pairs, and the track's log-mel. The
TFDS builder (tfds_builders/contextual_tags) picks a source by its config.

Sources:
  simulated        a seeded simulated world rendered to audio
  zenodo           the paper's public CSVs with users' own audio or npz mels
  playlists        contexts mined from users' own playlists (the paper's
                   collection method), embeddings from their listening
Shared by the real-data sources:
  csv_files        CSV reading with errors naming file and line
  user_embeddings  user_embeddings.csv of the public release
  interactions     user embeddings computed from listening data
  mels             audio or npz -> cached log-mels, in worker processes
  pairs, splits    the (song, user, context) table and its split strategies
  assemble         drops, splits and per-track grouping for the builder
  build_report     defects counted per reason, or raised under --strict
  options          "key=value" overrides of a source's settings
"""
