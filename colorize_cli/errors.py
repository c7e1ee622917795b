"""The one exception type the CLI turns into a clean one-line error."""


class UserError(Exception):
    """A problem the user can fix (bad path, bad option, bad file): printed as one line, exit 1.

    Anything else that escapes a command is a bug and is also printed as one line, with the
    traceback shown only under `--debug`.
    """
