"""One exception family. The CLI prints the message on one line and exits 2."""


class FourierToyError(Exception):
    """Base error: the message names the field and what is allowed."""


class ConfigError(FourierToyError):
    """A configuration value, preset, override string or CLI argument is invalid."""


class DataError(FourierToyError):
    """An input file or array (embeddings, vocab, weights) is missing or malformed."""


class CheckpointError(FourierToyError):
    """A run directory or checkpoint is missing, corrupt, or would be overwritten."""
