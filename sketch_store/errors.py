"""Exceptions raised by sketchgen libraries.

Every error a user can cause (bad file, bad configuration, mismatched spec)
derives from :class:`SketchgenError`, so the command line can print one clear
line for it instead of a traceback.
"""


class SketchgenError(Exception):
    """Base class of the errors a user can cause and fix."""


class SpecError(SketchgenError, ValueError):
    """A sketch spec is malformed (shapes, dtypes, non-finite values, unknown law)."""


class SpecMismatchError(SketchgenError, ValueError):
    """Two objects built for different sketch specs were combined."""


class DataError(SketchgenError, ValueError):
    """Input data are unusable (wrong shape, NaN/Inf, unreadable)."""


class CheckpointError(SketchgenError, ValueError):
    """A model checkpoint is corrupted, tampered with or incompatible."""
