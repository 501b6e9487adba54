"""User-facing errors: one line, naming the file, key or value and what would be valid.

The CLI turns a GolfError into its message on stderr and exit code 2.
"""


class GolfError(Exception):
    """A problem with the user's input or environment (not a bug in golf)."""

    exit_code = 2
