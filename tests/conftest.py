"""Shared test setup: telemetry off, offline hub, and the pytest fixtures every module may use.

Only pytest fixtures live here, and nothing imports this file: helpers are in the plain modules
tests/fixtures_*.py (``from tests.fixtures_tables import make_interactions``).
"""

from __future__ import annotations

import pandas as pd
import pytest

from llm4ctr.env import apply_defaults
from tests.fixtures_tables import make_interactions

apply_defaults()


@pytest.fixture
def interactions() -> pd.DataFrame:
    """A normalized ml-100k table: 60 users rating 20 distinct items each, three age scenarios."""
    return make_interactions(n_users=60, n_items=40, per_user=20, scenarios="age")
