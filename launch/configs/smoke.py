"""`--config=launch/configs/smoke.py`: the config of ctxtag/configs/smoke.py."""

from ctxtag.configs.smoke import get_config  # pylint: disable=unused-import
