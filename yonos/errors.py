"""One exception type for problems the user can fix; the CLI prints it as one line and exits 2."""


class UserError(Exception):
    """Bad input or missing resource. The message names the file and the fix, on one line."""
