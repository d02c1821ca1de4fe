"""The project's exception and warning family: every message names the file, branch, model or option."""


class HepsieveError(Exception):
    """Base class for all hepsieve errors."""


class InputFileError(HepsieveError):
    """An input file is missing, unreadable, lacks the tree or a required branch."""


class ChunkReadError(InputFileError):
    """A chunk of an input file could not be read (a damaged basket, a truncated file)."""


class DataValueError(HepsieveError):
    """Input values a result cannot be trusted with: non-finite weights, labels not 0 or 1."""


class ChunkError(HepsieveError):
    """The analysis code failed on a chunk (the message names the file and its entries)."""


class ModelCardError(HepsieveError):
    """A model card or ONNX file does not match the analysis it is applied to."""


class ConfigurationError(HepsieveError):
    """A command-line option or fileset entry is invalid."""


class CutflowMismatchError(HepsieveError):
    """Processed entries differ from the entries in the input files."""


class HepsieveWarning(UserWarning):
    """Warnings about data that was excluded or treated specially (never silent)."""
