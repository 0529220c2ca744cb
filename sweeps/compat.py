"""Every use of an Optuna or MLflow internal, in one place.
"""

from __future__ import annotations

from typing import Any


#: Alembic revisions of MLflow's tracking schema the queries here were written and tested
#: against: the head of MLflow 3.17.2 (``mlflow.store.db.utils._get_latest_schema_revision()``).
SCHEMA_REVISIONS = frozenset({"dc11669786a5"})


def schema_revision(conn: Any) -> str | None:
    """The database's Alembic revision (None: no ``alembic_version`` table); several heads
    are joined by ``+``."""
    from alembic.runtime.migration import MigrationContext

    heads = MigrationContext.configure(conn).get_current_heads()
    return "+".join(sorted(heads)) if heads else None
