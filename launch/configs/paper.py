"""`--config=launch/configs/paper.py`, kept for older command lines: the
config of ctxtag/configs/paper.py, which new ones name."""

from ctxtag.configs.paper import get_config  # pylint: disable=unused-import
