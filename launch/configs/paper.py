"""`--config=launch/configs/paper.py`: the config of ctxtag/configs/paper.py."""

from ctxtag.configs.paper import get_config  # pylint: disable=unused-import
