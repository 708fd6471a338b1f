"""Errors a user can act on. Their messages name the input and what to do,
so the CLI prints them as one line, without a traceback."""


class DistilleryError(Exception):
    """Base for errors caused by input, configuration or environment."""
