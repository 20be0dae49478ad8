"""`--config=launch/configs/default.py`, kept for older command lines: the
config of ctxtag/configs/default.py, which new ones name."""

from ctxtag.configs.default import get_config  # pylint: disable=unused-import
