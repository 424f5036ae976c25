"""The four kinds of failure the tool reports to a user, each with a message that says what to do."""


class UsageError(Exception):
    """Bad settings or input found before any work: the CLI prints the message and exits with code 2."""


class SourceError(Exception):
    """One source file cannot be used; the run records `skipped: <reason>` for it and goes on."""


class WeightsError(Exception):
    """Pretrained weights are missing or corrupt; the message names the file and how to supply it."""


class OutputError(OSError):
    """An output file could not be written (disk full, quota, read-only folder): `filename` names it. The run stops;
    what is finished stays on disk, and the same command resumes once there is room."""
