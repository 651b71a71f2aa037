"""The pipeline stages, one module each, as pure functions of (params, input files) -> output files.

Nothing in this package imports dagster: the DVC path (``llm4ctr stage NAME``) must run without it.
"""
