"""The job store's parts, by concern; :mod:`bildwerk.jobs.store` composes them into
``Store`` and is the one import callers use."""
