"""DVC stage entry points, one module per stage: `python -m yonos.stages.<name> [--profile P]`."""
