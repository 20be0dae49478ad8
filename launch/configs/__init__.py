"""Thin --config files kept for older command lines
(`--config=launch/configs/paper.py`); the configs are ctxtag/configs/."""
