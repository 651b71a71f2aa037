"""How the pipeline runs: the Dagster definitions, the `llm4ctr` CLI that dvc.yaml calls, dvc.yaml generation.

This is the only package that imports dagster (and only in definitions.py), so the DVC path and the
CLI stay light.
"""

from llm4ctr.env import apply_defaults

apply_defaults()
