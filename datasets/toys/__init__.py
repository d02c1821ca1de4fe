"""Toy generators that write files in the exact schemas of the real datasets."""
