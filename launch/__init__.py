"""Command-line entry points of ctxtag."""
