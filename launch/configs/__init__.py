"""Config files for --config; the configs themselves are in ctxtag/configs."""
