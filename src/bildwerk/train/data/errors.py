"""Errors of the dataset builder, in the project's BildwerkError family."""

from __future__ import annotations

from bildwerk.core.errors import BildwerkError


class DatasetError(BildwerkError):
    """The dataset cannot be built or used as asked (bad folder, bad options...)."""

    code = "dataset_error"


class SourceUnavailableError(DatasetError):
    """A source could not be fetched: registry unreachable, tool missing, package gone."""

    code = "source_unavailable"
