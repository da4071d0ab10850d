"""The one error type for what a user handed us: a recipe, an argument, a format, a data or
results file. It lives here, at the bottom of the package, so every layer can raise it.

The ``aha`` command shows an ``InputError`` as one line (``aha: error: ...``, exit 2);
any other exception is a bug or a broken environment and keeps its traceback. It is a
``ValueError``, so code that catches ``ValueError`` keeps working.

>>> from aha.formats import InputError, get_format
>>> try:
...     get_format("no-such-format")
... except InputError as err:
...     print(str(err).split(";")[0])
unknown format 'no-such-format'
"""


class InputError(ValueError):
    """Something the user gave is wrong; the message names it and says what to do."""
