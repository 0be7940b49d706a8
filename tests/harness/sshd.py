"""Test harness (being written)."""
