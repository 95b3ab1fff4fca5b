"""Errors ctfp raises on purpose: each says what went wrong, where, and how to fix it."""


class CtfpError(Exception):
    """Base class for errors a user can act on (bad input, bad settings)."""


class InputError(CtfpError):
    """A source could not be turned into a list of inputs (missing path, empty folder, ...)."""


class DecodeError(CtfpError):
    """One input file could not be decoded into CT slices; the run records it and goes on."""


class ShardMismatchError(CtfpError):
    """Shards in one dataset were written by different models, weights or settings."""


class WeightsUnavailableError(CtfpError):
    """The requested backbone weights cannot be loaded."""


class DeviceError(CtfpError):
    """The requested device or precision is not available on this machine."""
