"""How the pipeline runs: the Dagster definitions, the `llm4ctr` CLI that dvc.yaml calls, dvc.yaml generation.

Only the Dagster modules (definitions.py and the modules it assembles) import dagster at import
time, so the DVC path and the CLI stay light.
"""

from llm4ctr.env import apply_defaults

apply_defaults()
