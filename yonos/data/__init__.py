"""Data: dataset registry and acquisition, paired loading, degradations."""
