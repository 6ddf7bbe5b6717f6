"""The error type for input a user can fix (a bad bag or HDF5 file, a wrong profile, an existing output).

``motus`` prints these as one line, ``motus: error: ...``, and exits 2 (argparse's convention), no traceback.
"""

from __future__ import annotations


class DataInputError(ValueError):
    """Bad user input, explained in one line that names the file, the topic or key, and the fix."""
