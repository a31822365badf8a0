"""Errors a user can act on: the CLI and REST layers print these without a traceback."""


class UserError(Exception):
    """A mistake in the user's input (missing file, unknown scenario, bad column...)."""


class NotFound(UserError):
    """A named thing (serial, lot, problem id...) does not exist in the workspace."""
