"""Provided utilities for IFT6135 A2 (data set, embeddings, seeding, logging)."""
