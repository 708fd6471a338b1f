"""Prefect flows. `distill` builds a dataset from a recipe."""
