"""One request/response pair as the proxy saw it: the input of every receiver.

The proxy fills an :class:`Exchange` on the inference path with references
only (bodies, timestamps, a few header values) and hands it over once the
response has been sent; receivers turn it into events off that path.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field


def _new_id() -> uuid.UUID:
    # From the process's PRNG (reseeded in forked children): uuid4() reads os.urandom, 3x the cost, and
    # exchange ids need uniqueness, not unpredictability.
    return uuid.UUID(int=random.getrandbits(128), version=4)


@dataclass(slots=True)
class Exchange:
    method: str
    path: str  # without the query string
    query: str
    ts_us: int  # wall clock when the request arrived, microseconds since the epoch
    t_start: float  # perf_counter() when the request arrived
    request_body: bytes = b""
    # The nginx engine keeps request bodies up to its capture limit: a larger one is not in request_body
    # (request_cut), and request_bytes says how large it was; -1: request_body is the whole body.
    request_cut: bool = False
    request_bytes: int = -1
    request_content_type: str = ""
    # Inference-Header-Content-Length (KServe v2 binary tensor extension): the JSON part's size; -1 when absent.
    request_json_length: int = -1
    response_json_length: int = -1
    trace_id: str = ""
    tenant: str = ""
    replay_of: str = ""  # value of X-Driftwarden-Replay, when present
    status: int = 0  # status sent to the client; 0 when none was
    response_body: bytes = b""  # what was captured of the response (may be cut, see response_cut)
    response_cut: bool = False
    response_bytes: int = 0  # bytes of the whole response body
    response_content_type: str = ""
    response_content_encoding: str = ""
    # For streamed responses: (perf_counter, bytes captured so far) at each chunk, for time to first token.
    chunk_marks: list[tuple[float, int]] | None = None
    t_upstream_start: float = 0.0
    t_upstream_end: float = 0.0
    t_end: float = 0.0
    error_class: str = ""  # transport-level: upstream_unreachable, upstream_timeout, client_disconnected, ...
    extra: dict[str, str] = field(default_factory=dict)
    # Identity: the events of this exchange take ids derived from it, so capturing it again (after a crash,
    # from the journal) gives the same event ids.
    exchange_id: uuid.UUID = field(default_factory=_new_id)
    journal_seq: int = -1  # its record in the write-ahead journal; -1 when not journaled

    @property
    def latency_ms(self) -> float:
        return (self.t_end - self.t_start) * 1000.0

    @property
    def upstream_latency_ms(self) -> float:
        if not self.t_upstream_start or not self.t_upstream_end:
            return 0.0
        return (self.t_upstream_end - self.t_upstream_start) * 1000.0
