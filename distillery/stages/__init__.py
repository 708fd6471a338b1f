"""Stages of a build that read and write shards (see contract.py). Pure logic: storage
comes in as an object with read/write/exists/list/remove (adapters.storage.Dataset)."""
