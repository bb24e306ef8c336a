"""Provided code: students do not change it."""
OFFSET = 1.0
