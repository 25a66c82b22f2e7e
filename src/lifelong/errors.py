"""One exception type for problems the user can fix (bad file, unknown name, missing data).

The CLI prints these as a single line and exits non-zero; anything else is a bug and keeps its traceback.
"""


class LifelongError(Exception):
    pass
