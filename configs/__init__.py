"""YAML presets shipped with cwworld (installed as ``cwworld.configs``): load them by name with ``cwworld.load_config``."""
