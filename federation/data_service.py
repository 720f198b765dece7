"""The site's data API for one sandboxed ClientApp call, served by the runner.

The app's :class:`~insitu.federation.sandbox.RemoteSiteData` sends JSON
requests (``subjects``, ``series``, ``table_names``, ``table``, ``image``,
``header``); this side reads the node's dataset through
:class:`~insitu.federation.node_data.SiteData`, which keeps the tally of the
subjects and series it served, in the runner's memory, where the app cannot
reach it. The checker reads :meth:`DataService.tally` when the reply comes.
"""

from __future__ import annotations

import json
import pickle
from typing import Any

import numpy as np

from insitu.errors import InsituError
from insitu.federation.channel import Channel
from insitu.federation.checker import Tally
from insitu.federation.node_data import SiteData

__all__ = ["DataService"]

MAX_REQUEST = 4096


class DataService:
    def __init__(self, data: SiteData) -> None:
        self.data = data
        self.requests = 0
        # A refusal by the site's own rules while serving (e.g. the analytics'
        # differencing check): the runner replies with it, in the site's words.
        self.refusal: Exception | None = None

    def answer(self, channel: Channel, payload: bytes) -> None:
        """Answer one request frame (errors are the site's words, never a traceback)."""
        self.requests += 1
        try:
            request = json.loads(payload)
            op, arg = str(request["op"]), request.get("arg")
        except (ValueError, KeyError, TypeError):
            channel.send(b"X", b"the site's data API did not understand the request")
            return
        try:
            value = self._read(op, None if arg is None else str(arg))
        except KeyError as exc:
            channel.send(b"X", str(exc).strip("'\"").encode())
            return
        except InsituError as exc:
            self.refusal = exc
            channel.send(b"X", b"the site refused this request")
            return
        channel.send(b"D", pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))

    def _read(self, op: str, arg: str | None) -> Any:
        data = self.data
        if op == "subjects":
            return data.subjects
        if op == "series":
            return data.series
        if op == "table_names":
            return data.table_names()
        if op == "table" and arg is not None:
            return data.table(arg)
        if op == "release" and arg is not None:
            cells = json.loads(arg)
            return data.release({str(k): {str(s) for s in v} for k, v in cells.items()})
        if op in ("image", "header") and arg is not None:
            if not data.has_series(arg):
                raise KeyError(f"no series {arg!r} in dataset {data.alias!r} at this site")
            if op == "header":
                return data.header(arg)
            image = data.image(arg)
            # The reader's own decode (np.asarray of its image), not a dask compute.
            return image.copy(data=np.asarray(image.data))
        raise KeyError(
            f"the site's data API has no operation {op!r}: subjects, series, table_names, "
            "table, image, header, release"
        )

    def tally(self) -> Tally:
        data = self.data
        return Tally(
            subjects=set(data.served_subjects),
            series=set(data.served_series),
            identifiers=set(data.identifiers),
            image_shapes=data.image_shapes(),
        )
