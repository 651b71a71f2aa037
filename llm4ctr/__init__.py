"""llm4ctr core: the small pieces every layer shares (errors, atomic file writes, params, paths).

The pipeline itself lives in the top-level packages: ``assets`` (the stages as pure functions),
``models`` (torch code only), ``orchestration`` (Dagster definitions and the CLI) and ``serving``
(the BentoML service). This package must stay import-light: no torch, dagster or pandas here.
"""

__version__ = "0.1.0"
