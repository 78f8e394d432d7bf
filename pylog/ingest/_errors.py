"""Exceptions of ingest (all derive from :class:`pylog.PylogError`)::

    PylogError
    └── IngestError             an ingest cannot do what was asked (start
                                twice, a port in use, a source in use)
"""
from .._errors import PylogError


class IngestError(PylogError):
    """An ingest cannot do what was asked: start() twice, stop() of one not
    started, a source already used by another ingest, a port in use."""
