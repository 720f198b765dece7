"""The per-researcher budget ledger and the [federation] settings (no federation needed)."""

from __future__ import annotations

import threading

import pytest

from insitu.audit import AuditLog
from insitu.errors import BudgetExhaustedError, ConfigError, InvalidRequestError
from insitu.federation.ledger import Ledger
from insitu.federation.settings import FederationSettings, federation_settings, parse_federation


def _set(home, text: str) -> None:
    home.config_path.write_text(home.config_path.read_text() + "\n[federation]\n" + text)


def test_values_budget_exhausted_is_refused_clearly_and_audited(home):
    _set(home, "values_budget = 100\nepsilon_budget = 1.0\n")
    ledger = Ledger.for_home(home)
    ledger.charge("alice.site-a", "locat", values=60, run_id="1")
    # Another researcher and another dataset have their own budgets.
    ledger.charge("bob.site-a", "locat", values=100, run_id="2")
    ledger.charge("alice.site-a", "other", values=100, run_id="3")
    with pytest.raises(BudgetExhaustedError, match=r"60 of 100 numeric values.*carries 41"):
        ledger.charge("alice.site-a", "locat", values=41, run_id="4")
    # The refused reply was not charged: the rest still fits.
    assert ledger.charge("alice.site-a", "locat", values=40, run_id="5").total.values == 100
    refused = [e for e in AuditLog(home).entries() if e["kind"] == "federation.budget"]
    assert refused[-1]["user"] == "alice.site-a" and refused[-1]["details"]["decision"] == "refused"


def test_a_spent_budget_refuses_before_the_app_runs(home):
    _set(home, "values_budget = 100\nepsilon_budget = 1.0\n")
    ledger = Ledger.for_home(home)
    assert ledger.ensure_left("alice", "locat", run_id="1").values == 0
    ledger.charge("alice", "locat", values=100, epsilon=1.0, run_id="1")
    with pytest.raises(BudgetExhaustedError, match=r"alice for dataset 'locat'.*100 of 100"):
        ledger.ensure_left("alice", "locat", run_id="2")
    ledger.charge("bob", "locat", values=1, epsilon=1.0, run_id="3")
    ledger.ensure_left("bob", "locat", run_id="4")  # epsilon counts only when the site noises
    with pytest.raises(BudgetExhaustedError, match=r"epsilon 1 of 1 already spent"):
        ledger.ensure_left("bob", "locat", run_id="4", epsilon=True)
    refused = [e for e in AuditLog(home).entries() if e["kind"] == "federation.budget"]
    assert [(e["user"], e["details"]["run_id"]) for e in refused] == [("alice", "2"), ("bob", "4")]


def test_epsilon_budget(home):
    _set(home, "epsilon_budget = 1.0\n")
    ledger = Ledger.for_home(home)
    ledger.charge("alice", "locat", values=1, epsilon=0.6, run_id="1")
    with pytest.raises(BudgetExhaustedError, match=r"epsilon 0\.6 of 1 already spent"):
        ledger.charge("alice", "locat", values=1, epsilon=0.5, run_id="2")
    assert ledger.spent("alice", "locat").epsilon == pytest.approx(0.6)


def test_charge_needs_a_researcher_and_sane_numbers(home):
    ledger = Ledger.for_home(home)
    with pytest.raises(InvalidRequestError, match="no identity"):
        ledger.charge("", "locat", values=1, run_id="1")
    with pytest.raises(InvalidRequestError):
        ledger.charge("alice", "locat", values=-1, run_id="1")


def test_concurrent_charges_never_pass_the_budget(home):
    _set(home, "values_budget = 50\n")
    accepted: list[int] = []

    def charge() -> None:
        for _ in range(10):
            try:
                Ledger.for_home(home).charge("alice", "locat", values=3, run_id="1")
                accepted.append(3)
            except BudgetExhaustedError:
                pass

    threads = [threading.Thread(target=charge) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(accepted) == 48 == Ledger.for_home(home).spent("alice", "locat").values


def test_settings_defaults_and_validation(home):
    assert federation_settings(home) == FederationSettings()
    with pytest.raises(ConfigError, match=r"federation.max_bin\b.*valid keys"):
        parse_federation({"max_bin": 3})
    with pytest.raises(ConfigError, match=r"federation\.values_budget must be at least 1"):
        parse_federation({"values_budget": 0})
    with pytest.raises(ConfigError, match=r"trusted_homes.*64 hex"):
        parse_federation({"trusted_homes": {"site-a": "nope"}})
    with pytest.raises(ConfigError, match="min_bin_width must be a number"):
        parse_federation({"min_bin_width": "wide"})
    with pytest.raises(ConfigError, match=r"sandbox_memory_mb must be at least 256.*RLIMIT_AS"):
        parse_federation({"sandbox_memory_mb": 64})
    with pytest.raises(ConfigError, match=r"sandbox_cpu_seconds must be at least 1"):
        parse_federation({"sandbox_cpu_seconds": 0})
    with pytest.raises(ConfigError, match=r"sandbox_max_processes must be at least 8"):
        parse_federation({"sandbox_max_processes": 2})
