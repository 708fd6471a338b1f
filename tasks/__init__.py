"""Prefect tasks: thin wrappers over distillery's pure logic and adapters.

Each task run handles a whole stage in batches of rows, never one row.
"""
