"""The code behind convert.py: what is not the command line itself."""


class UserError(Exception):
    """Bad input: printed as one line `convert.py: <message>`, exit 2."""
