"""What each researcher has taken out of a dataset: numeric values and privacy budget.

Every federated reply that leaves a site is charged here, per researcher and
dataset, before it leaves: the number of numeric values it carries (metrics
and array entries, as the site's checker counted them from the serialised
reply) and the differential-privacy epsilon it spent. When either total would
pass the site's limit (``[federation] values_budget`` / ``epsilon_budget``),
:meth:`Ledger.charge` raises :class:`~insitu.errors.BudgetExhaustedError` and
records nothing: the reply must not leave.

    from insitu.federation.ledger import Ledger
    Ledger.for_home(home).charge("alice.site-a", "locat", values=12, epsilon=0.5, run_id="42")

The ledger is a SQLite file in the node's private folder (never served, never
reachable from app code). A charge and its check happen in one write
transaction, so concurrent replies of several runs cannot both squeeze
through the last of a budget. Refusals are written to the audit log
(``federation.budget``).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime

from insitu.config import NodeHome
from insitu.errors import BudgetExhaustedError, InvalidRequestError

__all__ = ["Charge", "Ledger", "Spent"]

LEDGER_NAME = "federation-ledger.sqlite"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS charges (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    researcher TEXT NOT NULL,
    dataset TEXT NOT NULL,
    run_id TEXT NOT NULL,
    values_count INTEGER NOT NULL,
    epsilon REAL NOT NULL,
    at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS charges_researcher_dataset ON charges (researcher, dataset);
"""


@dataclass(frozen=True)
class Spent:
    """Totals so far for one researcher and dataset."""

    values: int
    epsilon: float


@dataclass(frozen=True)
class Charge:
    """One accepted charge and the totals after it."""

    researcher: str
    dataset: str
    run_id: str
    values: int
    epsilon: float
    total: Spent
    values_budget: int
    epsilon_budget: float


class Ledger:
    """The per-researcher, per-dataset budget ledger of one node home."""

    def __init__(self, home: NodeHome, *, values_budget: int, epsilon_budget: float) -> None:
        self.home = home
        self.values_budget = values_budget
        self.epsilon_budget = epsilon_budget
        self.path = home.private / LEDGER_NAME

    @classmethod
    def for_home(cls, home: NodeHome) -> Ledger:
        """The ledger with the limits of the home's ``[federation]`` settings."""
        from insitu.federation.settings import federation_settings

        settings = federation_settings(home)
        return cls(
            home, values_budget=settings.values_budget, epsilon_budget=settings.epsilon_budget
        )

    def _connect(self) -> sqlite3.Connection:
        from insitu._sqlite import connect

        return connect(self.path, _SCHEMA)

    def spent(self, researcher: str, dataset: str) -> Spent:
        """What ``researcher`` has taken out of ``dataset`` so far."""
        conn = self._connect()
        try:
            return _totals(conn, researcher, dataset)
        finally:
            conn.close()

    def ensure_left(
        self, researcher: str, dataset: str, *, run_id: str, epsilon: bool = False
    ) -> Spent:
        """Raise BudgetExhaustedError (audited) when nothing is left of ``researcher``'s
        values budget (or, with ``epsilon``, of the privacy budget) for ``dataset``: the
        site then refuses the run before any app code runs."""
        spent = self.spent(researcher, dataset)
        problem = ""
        if spent.values >= self.values_budget:
            problem = (
                f"{spent.values} of {self.values_budget} numeric values already used "
                "(limit: [federation] values_budget)"
            )
        elif epsilon and spent.epsilon >= self.epsilon_budget - 1e-12:
            problem = (
                f"epsilon {spent.epsilon:g} of {self.epsilon_budget:g} already spent "
                "(limit: [federation] epsilon_budget)"
            )
        if problem:
            self._refused(researcher, dataset, run_id, 0, 0.0, spent, problem)
        return spent

    def charge(
        self,
        researcher: str,
        dataset: str,
        *,
        values: int,
        epsilon: float = 0.0,
        run_id: str,
    ) -> Charge:
        """Record a reply's cost, or raise BudgetExhaustedError (and record nothing)."""
        if not researcher:
            raise InvalidRequestError(
                "a federated reply must be charged to a researcher; the run carries no identity"
            )
        if isinstance(values, bool) or not isinstance(values, int) or values < 0:
            raise InvalidRequestError(f"values must be a whole number >= 0, not {values!r}")
        if not epsilon >= 0:
            raise InvalidRequestError(f"epsilon must be >= 0, not {epsilon!r}")
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                total = _totals(conn, researcher, dataset)
                problem = self._over(total, values, float(epsilon))
                if problem:
                    conn.execute("ROLLBACK")
                    self._refused(researcher, dataset, run_id, values, epsilon, total, problem)
                conn.execute(
                    "INSERT INTO charges (researcher, dataset, run_id, values_count, epsilon, at) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        researcher,
                        dataset,
                        str(run_id),
                        values,
                        float(epsilon),
                        datetime.now(UTC).isoformat(timespec="seconds"),
                    ),
                )
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        finally:
            conn.close()
        after = Spent(total.values + values, total.epsilon + float(epsilon))
        return Charge(
            researcher, dataset, str(run_id), values, float(epsilon), after,
            self.values_budget, self.epsilon_budget,
        )  # fmt: skip

    def _over(self, total: Spent, values: int, epsilon: float) -> str:
        if total.values + values > self.values_budget:
            return (
                f"{total.values} of {self.values_budget} numeric values already used, this "
                f"reply carries {values} (limit: [federation] values_budget)"
            )
        if epsilon and total.epsilon + epsilon > self.epsilon_budget + 1e-12:
            return (
                f"epsilon {total.epsilon:g} of {self.epsilon_budget:g} already spent, this "
                f"reply spends {epsilon:g} (limit: [federation] epsilon_budget)"
            )
        return ""

    def _refused(
        self,
        researcher: str,
        dataset: str,
        run_id: str,
        values: int,
        epsilon: float,
        total: Spent,
        problem: str,
    ) -> None:
        from insitu.audit import AuditLog

        AuditLog(self.home).append(
            "federation.budget",
            user=researcher,
            dataset=dataset,
            run_id=str(run_id),
            decision="refused",
            values=values,
            epsilon=float(epsilon),
            values_spent=total.values,
            epsilon_spent=total.epsilon,
        )
        raise BudgetExhaustedError(
            f"the budget of {researcher} for dataset {dataset!r} at this site is exhausted: "
            f"{problem}; ask the site's steward"
        )


def _totals(conn: sqlite3.Connection, researcher: str, dataset: str) -> Spent:
    row = conn.execute(
        "SELECT COALESCE(SUM(values_count), 0), COALESCE(SUM(epsilon), 0.0) FROM charges "
        "WHERE researcher = ? AND dataset = ?",
        (researcher, dataset),
    ).fetchone()
    return Spent(int(row[0]), float(row[1]))
