"""`--config=launch/configs/smoke.py`, kept for older command lines: the
config of ctxtag/configs/smoke.py, which new ones name."""

from ctxtag.configs.smoke import get_config  # pylint: disable=unused-import
