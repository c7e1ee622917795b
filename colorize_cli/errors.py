"""The one exception type the CLI turns into a clean one-line error."""


class UserError(Exception):
    """A problem the user can fix (bad path, bad option, bad file): printed as one line, exit 1.

    Anything else that escapes a command is a bug and is also printed as one line, with the
    traceback shown only under `--debug`.
    """


def one_line(text: str) -> str:
    """`text` with control characters (newlines, tabs, escapes from file contents or names) shown
    as Python escapes, so that a message quoting them stays on one line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
