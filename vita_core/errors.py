"""Errors a user can cause and fix. The CLI prints their message on one line and exits non-zero."""


class VitaError(Exception):
    """Base class: the message says what went wrong and what to do about it."""


class InputError(VitaError):
    """A file, text or flag given by the user is missing, malformed or out of range."""


class CheckpointError(VitaError):
    """A model or codec folder is missing, incomplete or does not match what the code expects."""


class AudioError(VitaError):
    """Audio that cannot be read, is empty, or has an unusable format."""


class DiskFullError(VitaError):
    """A write ran out of space; the message names the path, and nothing half-written is left."""
