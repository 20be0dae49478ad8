"""TFDS builders that materialise ctxtag's datasets."""
