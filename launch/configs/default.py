"""`--config=launch/configs/default.py`: the config of ctxtag/configs/default.py."""

from ctxtag.configs.default import get_config  # pylint: disable=unused-import
