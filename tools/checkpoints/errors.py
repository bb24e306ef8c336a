"""Typed errors of the checkpoint checker.

Every error names its source (the file or the config key it came from) and has a short
``kind`` that becomes the ``error_kind`` column of a result row, so a TA can filter rows.
"""

from __future__ import annotations

from pathlib import Path

RESAVE_ADVICE = 'Re-save the weights only, e.g. torch.save(model.state_dict(), "model.pt"), and resubmit.'


class CheckpointError(Exception):
    """A submission that cannot be scored; becomes one error row, the batch continues."""

    kind = "error"

    def __init__(self, source: str | Path, message: str):
        self.source = str(source)
        self.message = message
        super().__init__(f"{self.source}: {message}")


class MissingFileError(CheckpointError):
    """The submission has no model.pt (or model.safetensors)."""

    kind = "missing"


class OversizedCheckpointError(CheckpointError):
    """The file is larger than the size limit (the course's Gradescope limit is 100 MB)."""

    kind = "oversized"


class UnsafeCheckpointError(CheckpointError):
    """The file holds pickled Python objects beyond tensors and containers; never unpickled."""

    kind = "unsafe"


class CorruptCheckpointError(CheckpointError):
    """The file is not a readable PyTorch or safetensors checkpoint."""

    kind = "corrupt"


class StateDictError(CheckpointError):
    """The checkpoint loads but is not a state dict of tensors for the course's DecoderLM."""

    kind = "state_dict"


class ShapeMismatchError(CheckpointError):
    """Keys or shapes disagree with the architecture built from the config and the shapes."""

    kind = "shape"


class NonFiniteWeightsError(CheckpointError):
    """A weight tensor holds NaN or infinity."""

    kind = "non_finite"


class ConfigError(CheckpointError):
    """The student's YAML config is missing, unreadable, or lacks what the shapes cannot tell."""

    kind = "config"


class BudgetError(CheckpointError):
    """The config's training run exceeds the handout's FLOP budget (1e17 for question 2.6)."""

    kind = "budget"


class VocabularyError(CheckpointError):
    """The test file holds token ids the checkpoint's vocabulary does not have."""

    kind = "vocabulary"


class EvaluationError(CheckpointError):
    """The forward pass failed or produced a non-finite loss."""

    kind = "evaluation"


class ExportError(Exception):
    """The submissions folder (Gradescope export or plain folder) cannot be read at all."""


class TestTokensError(Exception):
    """The test token file cannot be read or is not a 1-D array of token ids."""

    __test__ = False  # not a pytest class
