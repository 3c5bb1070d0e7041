"""Example objectives that sweeps can name as ``examples.<module>:<function>``."""
