"""The exception hierarchy. Every user-facing failure is a ``LightsegError``; the CLIs turn it into exit code 2."""

from __future__ import annotations


class LightsegError(Exception):
    """Base class: a problem the user can fix (bad input, missing dependency, unsupported setting)."""


class MissingDependencyError(LightsegError, ImportError):
    """An optional package is needed for this call; the message names the extra to install."""


class BackendUnavailableError(LightsegError):
    """The package is present but the hardware or provider it needs is not (e.g. no CUDA device)."""


class UnknownModelError(LightsegError, ValueError):
    """A model name that is not in the registry."""


class InvalidInputError(LightsegError, ValueError):
    """An image, tensor or size that does not match what was expected."""


class DataError(LightsegError):
    """A dataset file or folder that cannot be read, paired or recognised."""


class CheckpointError(LightsegError):
    """A weights file that cannot be read or does not fit the model."""


class OutputError(LightsegError):
    """An output file or folder that cannot be written: full disk, read-only, or a file where a folder belongs."""


class ExportConfigError(LightsegError, ValueError):
    """Contradictory or impossible export settings."""


class ExportError(LightsegError):
    """One export step failed; ``step`` names it."""

    def __init__(self, step: str, message: str) -> None:
        super().__init__(f"export step '{step}' failed: {message}")
        self.step = step


class ManifestError(LightsegError):
    """An export folder whose manifest.json is missing, unreadable, or not a lightseg-export manifest."""


class ParityError(LightsegError):
    """Two runtimes disagree beyond the documented tolerance."""


class EngineError(LightsegError):
    """A TensorRT engine that cannot be loaded here (wrong version, wrong GPU, truncated)."""


class PredictorClosedError(LightsegError):
    """A predictor was used after ``close()``."""
