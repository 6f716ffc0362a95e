"""The errors and warnings every index raises, in a module of their own so that the argument checks, the
version store and the index classes can all raise them without importing each other."""

from __future__ import annotations


class IndexFormatError(ValueError):
    """An index folder is missing, corrupt, or holds another kind of index."""


class DuplicateDocumentIdError(ValueError):
    """A document id is given twice, or is already in the index."""


class UnknownDocumentIdError(ValueError):
    """A document id to remove is not in the index."""


class UnknownIdWarning(UserWarning):
    """``remove_documents`` was given ids that are not in the index; they were skipped."""
