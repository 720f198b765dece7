"""Tables built with ACRO, so the airlock can check dominance and counts.

A finished table of means hides who contributed to each cell, so the p% and
n-k dominance rules cannot be checked on it. ``pivot_table`` builds the table
and lets ACRO record, beside it, the evidence its checks need (cell counts,
sums, largest contributions). ``insitu.release`` sends that evidence with the
table; the airlock runs ACRO's checks on it and confirms the table matches.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

__all__ = ["EVIDENCE_ATTR", "pivot_table"]

EVIDENCE_ATTR = "insitu_sdc"


def pivot_table(
    data: Any,
    *,
    values: str,
    index: str | Sequence[str],
    columns: str | Sequence[str] | None = None,
    aggfunc: str | Sequence[str] = ("count", "mean"),
) -> Any:
    """``pandas.pivot_table`` plus ACRO's disclosure evidence, ready for release.

    The result is flat (index levels as columns, ``<stat>_<values>`` names) so
    that it reads the same as the CSV the airlock keeps.
    """
    import pandas as pd

    from insitu.disclosure.acro import import_acro

    sdc = import_acro()
    from acro.table_utils import aggfunc_to_strings
    from acro.tablemodeldetails import TableModelDetails

    index_names = [index] if isinstance(index, str) else list(index)
    column_names = (
        [] if columns is None else [columns] if isinstance(columns, str) else list(columns)
    )
    funcs = [aggfunc] if isinstance(aggfunc, str) else list(aggfunc)
    kwargs = {
        "values": values,
        "index": index_names,
        "columns": column_names,
        "aggfunc": funcs,
        "dropna": False,
        "observed": False,
    }
    model = TableModelDetails(
        index=[data[n] for n in index_names],
        columns=[data[n] for n in column_names],
        values=data[values],
        thekwargs=kwargs,
        risk_appetite={"safe_nk_n": 2},
        command="pivot_table",
    )
    analyses = aggfunc_to_strings(funcs)
    checks = sdc.SDCChecks({"check_missing_values": False})
    evidence = checks.get_evidence_forall_analyses(analyses, model)
    table = pd.pivot_table(data, **kwargs)
    table.columns = [
        "_".join(str(p) for p in c) if isinstance(c, tuple) else str(c) for c in table.columns
    ]
    table = table.reset_index()
    table.attrs[EVIDENCE_ATTR] = {
        "analyses": analyses,
        "dimensions": index_names + column_names,
        "interim": {
            name: json.loads(frame.to_json(orient="split"))
            for name, frame in evidence.interim_tables.items()
        },
    }
    return table
