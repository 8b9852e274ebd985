"""In-process capture: record inferences from Python code that cannot sit behind the proxy.

The module is callable, so both spellings work and stay cheap to import::

    from driftwarden.collector import capture

    capture.configure(model="bikes", store="chdb:///var/lib/driftwarden")   # once; optional (see below)

    # 1. as a context manager around one prediction
    with capture(features={"temp": 0.24, "season": "winter"}) as ev:
        ev.prediction = model.predict(x)          # a number -> prediction, text -> prediction_label
        ev.features["hum"] = 0.81                 # features may be added inside the block
        ev.outputs = {"p_low": 0.1, "p_high": 0.9}

    # 2. as a decorator: the return value is the prediction
    @capture(model="bikes", features=lambda row: row)   # features: a dict, or a function of the call's arguments
    def predict(row: dict) -> float: ...

Each call records one :class:`driftwarden.collector.event.Event` (``protocol='python'``, ``ts`` when the
block started, ``latency_ms`` of the block) through the same :class:`driftwarden.collector.writer.Writer`
as the proxy: batched, off the calling thread, spooled when the sink is down. When the block
or the function raises, the event records ``error_class`` (the exception's type name) and
the exception propagates unchanged. A decorated ``async def`` is awaited and timed.

Features: numbers and booleans become numeric features (``num_names``/``num_values``),
anything else a categorical one (``str(value)``); ``None`` values are skipped. Without
``features=``, a decorated function's features are its single mapping argument, or else
its keyword arguments.

Writer: :func:`configure` sets it (``store=``/``hub=``/``spool_dir=``... as
:func:`driftwarden.collector.writer.open_writer`, or ``writer=`` an existing one). Without it, the
first capture opens one from ``$DRIFTWARDEN_HUB`` (a hub URL) or else ``$DRIFTWARDEN_STORE``.
:func:`shutdown` flushes it; it also runs at interpreter exit.

Thread-safe: captures may run on many threads at once; configure/shutdown are meant for
start-up and exit.
"""

from __future__ import annotations

import atexit
import dataclasses
import functools
import inspect
import operator
import os
import random
import sys
import threading
import time
import types
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from driftwarden.collector.event import Event
from driftwarden.names import model_name_problem

HUB_ENV = "DRIFTWARDEN_HUB"

_lock = threading.Lock()
_writer = None  # collector.writer.Writer, created on first use
_default_model: str | None = None


def configure(
    *,
    model: str | None = None,
    writer: Any = None,
    store: str | None = None,
    hub: str | None = None,
    spool_dir: str | os.PathLike | None = None,
    **writer_options: Any,
):
    """Set the writer (and the default model) that captures use; returns the started writer.

    ``writer`` is an existing :class:`driftwarden.collector.writer.Writer` (started here if it is not);
    otherwise one is opened with :func:`driftwarden.collector.writer.open_writer` (``store``, ``hub``,
    ``spool_dir`` and ``writer_options`` such as ``batch_events``). A writer configured
    before is closed (flushed) first.
    """
    global _writer, _default_model
    from driftwarden.collector.writer import open_writer

    _check_model(model)
    if writer is None:
        writer = open_writer(model=model or "python", store=store, hub=hub, spool_dir=spool_dir, **writer_options)
    writer.start()
    with _lock:
        previous, _writer = _writer, writer
        _default_model = model
    if previous is not None and previous is not writer:
        previous.close()
    return writer


def shutdown(timeout: float = 10.0) -> None:
    """Flush and close the writer and forget the configuration; a later capture opens a new writer."""
    global _writer, _default_model
    with _lock:
        writer, _writer = _writer, None
        _default_model = None
    if writer is not None:
        writer.close(timeout=timeout)


def _current_writer():
    global _writer
    writer = _writer  # the common case without the lock: configured already (an attribute read is atomic)
    if writer is not None:
        return writer
    with _lock:
        if _writer is None:
            from driftwarden.collector.writer import open_writer

            hub = os.environ.get(HUB_ENV) or None
            _writer = open_writer(model=_default_model or "python", hub=hub).start()
        return _writer


atexit.register(shutdown)


_getrandbits = random.getrandbits
_time_ns = time.time_ns
_perf_counter = time.perf_counter
_UUID4_CLEAR = ~((0xC000 << 48) | (0xF000 << 64))  # what uuid.UUID(int=..., version=4) clears and sets
_UUID4_SET = (0x8000 << 48) | (4 << 76)
_SAFE_UNKNOWN = uuid.SafeUUID.unknown
_new_object = object.__new__
_set_attribute = object.__setattr__


def _uuid(value: int) -> uuid.UUID:
    """``uuid.UUID(int=value)`` without its argument checks (``value`` is a 128-bit version-4 id): 2x faster."""
    u = _new_object(uuid.UUID)
    _set_attribute(u, "int", value)
    _set_attribute(u, "is_safe", _SAFE_UNKNOWN)
    return u


_EVENT_DEFAULTS = {
    f.name: (f.default if f.default is not dataclasses.MISSING else f.default_factory())  # type: ignore[misc]
    for f in dataclasses.fields(Event)
    if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
}
_PYTHON_EVENT_FIELDS = (
    "model",
    "event_id_int",
    "ts_us",
    "model_version",
    "tenant",
    "endpoint",
    "latency_ms",
    "num_names",
    "num_values",
    "cat_names",
    "cat_values",
    "prediction",
    "prediction_label",
    "output_names",
    "output_values",
    "output_text",
    "error_class",
)


class _PythonEvent:
    """The columns a capture fills, in slots; every other column of ``Event`` is its default, a class attribute.

    The writer and ``collector.arrow.to_table`` read events by attribute name, so this stands in for an
    ``Event`` (whose constructor sets all 58 fields) on the capture's fast path. Never mutated once submitted;
    the class attributes (empty lists among them) are shared and never written.
    """

    __slots__ = _PYTHON_EVENT_FIELDS
    protocol = "python"

    def __init__(self, model: str, event_id_int: int, ts_us: int, model_version: str, tenant: str, endpoint: str):
        self.model = model
        self.event_id_int = event_id_int  # the id as an int: to_table packs it as is, no UUID object per event
        self.ts_us = ts_us
        self.model_version = model_version
        self.tenant = tenant
        self.endpoint = endpoint
        self.latency_ms = 0.0
        self.num_names = self.num_values = self.cat_names = self.cat_values = _EMPTY
        self.prediction = None
        self.prediction_label = ""
        self.output_names = self.output_values = _EMPTY
        self.output_text = ""
        self.error_class = ""

    @property
    def event_id(self) -> uuid.UUID:
        return _uuid(self.event_id_int)


_EMPTY: list = []  # shared, never mutated: a default empty list column
for _name, _default in _EVENT_DEFAULTS.items():
    if _name not in _PYTHON_EVENT_FIELDS and _name not in ("protocol", "event_id"):
        setattr(_PythonEvent, _name, _default)
# The columns the class fixes, for collector.arrow.to_table: it builds them once per batch, not per event.
_PythonEvent.CLASS_COLUMNS = {  # type: ignore[attr-defined]
    name: getattr(_PythonEvent, name)
    for name in (*_EVENT_DEFAULTS, "protocol")
    if name not in _PYTHON_EVENT_FIELDS and name != "event_id"
}


class Captured:
    """What a ``with capture(...) as ev`` block fills: the prediction, outputs and features.

    ``event`` is the underlying :class:`~collector.event.Event`, for any other column
    (``ev.event.trace_id = ...``); its ``event_id`` is known from the start (``ev.event_id``),
    for joining ground truth later. The full ``Event`` (58 columns) is built only when ``event``
    is read; otherwise the capture records a :class:`_PythonEvent` of the columns it fills
    (the writer reads the other columns' defaults from its class): about 40 % of the cost.
    """

    __slots__ = (
        "_spec",
        "_model",
        "_id",
        "_ts_us",
        "_event",
        "features",
        "prediction",
        "outputs",
        "output_text",
        "_t0",
    )

    def __init__(self, spec: Capture, model: str, features: dict[str, Any]) -> None:
        self._spec = spec
        self._model = model
        # A version-4 UUID from the process's PRNG: uuid4() reads os.urandom, 3x the cost, and
        # event ids need uniqueness, not unpredictability (random reseeds in forked children).
        self._id = (_getrandbits(128) & _UUID4_CLEAR) | _UUID4_SET
        self._ts_us = _time_ns() // 1000
        self._event: Event | None = None
        self.features = features
        self.prediction: Any = None
        self.outputs: Mapping[str, float] | None = None
        self.output_text: str = ""
        self._t0 = _perf_counter()

    @property
    def event(self) -> Event:
        """The full event (built on first access), for columns this class has no attribute for."""
        if self._event is None:
            spec = self._spec
            self._event = Event(
                model=self._model,
                event_id=_uuid(self._id),
                ts_us=self._ts_us,
                protocol="python",
                model_version=spec.model_version,
                tenant=spec.tenant,
                endpoint=spec.endpoint,
            )
        return self._event

    @property
    def event_id(self) -> uuid.UUID:
        return self._event.event_id if self._event is not None else _uuid(self._id)

    def _finish(self, error: BaseException | None) -> Event | _PythonEvent:
        latency_ms = (_perf_counter() - self._t0) * 1000.0
        if self._event is None:
            return self._finish_fast(error, latency_ms)
        return self._fill(self._event, error, latency_ms)

    def _fill(self, event: Event, error: BaseException | None, latency_ms: float) -> Event:
        """The general path: what the block recorded, set on the full :class:`Event`."""
        event.latency_ms = latency_ms
        _set_features(event, self.features)
        _set_prediction(event, self.prediction)
        if self.outputs:
            event.output_names = [str(k) for k in self.outputs]
            event.output_values = [float(v) for v in self.outputs.values()]
        if self.output_text:
            event.output_text = self.output_text
        if error is not None:
            event.error_class = type(error).__name__
        return event

    def _finish_fast(self, error: BaseException | None, latency_ms: float) -> Event | _PythonEvent:
        split = _split_features(self.features) if self.features else _NO_FEATURES
        if split is None:  # feature values of unusual types: the general path
            return self._fill(self.event, error, latency_ms)
        spec = self._spec
        event = _PythonEvent(self._model, self._id, self._ts_us, spec.model_version, spec.tenant, spec.endpoint)
        event.latency_ms = latency_ms
        event.num_names, event.num_values, event.cat_names, event.cat_values = split
        prediction = self.prediction
        if prediction is not None:
            if type(prediction) is float:
                event.prediction = prediction
            else:
                _set_prediction(event, prediction)  # type: ignore[arg-type]
        if self.outputs:
            event.output_names = [str(k) for k in self.outputs]
            event.output_values = [float(v) for v in self.outputs.values()]
        if self.output_text:
            event.output_text = self.output_text
        if error is not None:
            event.error_class = type(error).__name__
        return event


def _check_model(model: str | None) -> None:
    """ValueError naming why ``model`` is refused (``driftwarden.names``): raised where the name is given, rather
    than its events refused later by a hub."""
    problem = None if model is None else model_name_problem(model)
    if problem:
        raise ValueError(f"model name {model!r} is refused: {problem}")


class Capture:
    """One capture specification: a context manager (one inference) and a decorator (every call)."""

    def __init__(
        self,
        model: str | None = None,
        *,
        features: Mapping[str, Any] | Callable[..., Mapping[str, Any]] | None = None,
        model_version: str = "",
        tenant: str = "",
        endpoint: str = "",
    ) -> None:
        _check_model(model)
        self.model = model
        self.features = features
        self.model_version = model_version
        self.tenant = tenant
        self.endpoint = endpoint
        # Open `with` blocks per thread: one Capture object may be entered by several threads at once.
        self._open_blocks: dict[int, list[Captured]] = {}

    def _open(self, features: Mapping[str, Any] | None) -> Captured:
        model = self.model or _default_model
        if not model:
            raise ValueError("capture needs a model name: capture(model=...) or capture.configure(model=...)")
        return Captured(self, model, dict(features) if features else {})

    def _close(self, captured: Captured, error: BaseException | None) -> None:
        try:
            event = captured._finish(error)
        except Exception as exc:  # a value that cannot be recorded must not break the caller
            event = captured.event
            event.error_class = event.error_class or f"capture_error:{type(exc).__name__}"
        _current_writer().submit(event)

    # -- context manager -----------------------------------------------------------------------

    def __enter__(self) -> Captured:
        features = self.features
        static = features if type(features) is dict or isinstance(features, Mapping) else None
        captured = self._open(static)
        self._open_blocks.setdefault(threading.get_ident(), []).append(captured)
        return captured

    def __exit__(self, exc_type, exc, tb) -> None:
        thread = threading.get_ident()
        blocks = self._open_blocks[thread]
        captured = blocks.pop()
        if not blocks:
            del self._open_blocks[thread]
        self._close(captured, exc)

    # -- decorator -----------------------------------------------------------------------------

    def __call__(self, fn: Callable) -> Callable:
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                captured = self._open(self._features_of(args, kwargs))
                try:
                    result = await fn(*args, **kwargs)
                except BaseException as exc:
                    self._close(captured, exc)
                    raise
                _record_result(captured, result)
                self._close(captured, None)
                return result

            return async_wrapper

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            captured = self._open(self._features_of(args, kwargs))
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                self._close(captured, exc)
                raise
            _record_result(captured, result)
            self._close(captured, None)
            return result

        return wrapper

    def _features_of(self, args: tuple, kwargs: dict) -> Mapping[str, Any]:
        if callable(self.features):
            return self.features(*args, **kwargs)
        if isinstance(self.features, Mapping):
            return self.features
        if len(args) == 1 and isinstance(args[0], Mapping) and not kwargs:
            return args[0]
        return kwargs


def capture(
    model: str | None = None,
    *,
    features: Mapping[str, Any] | Callable[..., Mapping[str, Any]] | None = None,
    model_version: str = "",
    tenant: str = "",
    endpoint: str = "",
) -> Capture:
    """A :class:`Capture`: use it as ``with capture(...) as ev:`` or as ``@capture(...)``."""
    return Capture(model, features=features, model_version=model_version, tenant=tenant, endpoint=endpoint)


def _record_result(captured: Captured, result: Any) -> None:
    if isinstance(result, Mapping):
        captured.outputs = {k: v for k, v in result.items() if _is_number(v)}
    else:
        captured.prediction = result


_PLAIN_NUMBERS = (float, int, bool)


_NO_FEATURES = (_EMPTY, _EMPTY, _EMPTY, _EMPTY)
_LAYOUTS: dict[tuple, tuple | None] = {}  # (names, value types) -> how to split them; see _split_features
_MAX_LAYOUTS = 1024
_NUMERIC_KINDS = (float, int, bool)


def _split_features(features: Mapping[str, Any]) -> tuple[list, list, list, list] | None:
    """``(num_names, num_values, cat_names, cat_values)`` of a features mapping, as ``_set_features`` splits
    them; None when a value's type needs ``_set_features`` itself (anything but float, int, bool, str, None).

    A model's captures repeat one layout (the same names with values of the same types), so the split is
    computed once per layout and cached: each capture then costs two tuple builds, a dict lookup and two
    item picks in C. The name lists are shared by the events of a layout (never mutated).
    """
    names = tuple(features)
    values = tuple(features.values())
    key = (names, tuple(map(type, values)))
    layout = _LAYOUTS.get(key, False)
    if layout is False:
        layout = _layout(*key)
        if len(_LAYOUTS) >= _MAX_LAYOUTS:
            _LAYOUTS.clear()
        _LAYOUTS[key] = layout
    if layout is None:
        return None
    num_names, num_pick, cat_names, cat_pick = layout
    return (
        num_names,
        list(map(float, num_pick(values))) if num_pick is not None else _EMPTY,
        cat_names,
        list(cat_pick(values)) if cat_pick is not None else _EMPTY,
    )


def _layout(names: tuple, kinds: tuple) -> tuple | None:
    if any(type(name) is not str for name in names):
        return None
    num: list[int] = []
    cat: list[int] = []
    for i, kind in enumerate(kinds):
        if kind in _NUMERIC_KINDS:
            num.append(i)
        elif kind is str:
            cat.append(i)
        elif kind is not type(None):
            return None
    return [names[i] for i in num] or _EMPTY, _picker(num), [names[i] for i in cat] or _EMPTY, _picker(cat)


def _picker(indexes: list[int]) -> Callable[[tuple], tuple] | None:
    """A function of a values tuple returning the values at ``indexes`` as a tuple (in C)."""
    if not indexes:
        return None
    if indexes == list(range(indexes[0], indexes[-1] + 1)):
        return operator.itemgetter(slice(indexes[0], indexes[-1] + 1))
    if len(indexes) == 1:
        i = indexes[0]
        return lambda values: (values[i],)
    return operator.itemgetter(*indexes)


def _set_features(event: Event, features: Mapping[str, Any]) -> None:
    if not features:
        return
    names = list(features)
    values = list(features.values())
    kinds = list(map(type, values))
    plain_numbers = kinds.count(float) + kinds.count(int) + kinds.count(bool)
    if plain_numbers == len(kinds) and set(map(type, names)) == {str}:  # the common case, in C
        event.num_names.extend(names)
        event.num_values.extend(map(float, values))
        return
    num_names, num_values = event.num_names, event.num_values
    cat_names, cat_values = event.cat_names, event.cat_values
    for name, value, kind in zip(names, values, kinds, strict=True):
        if kind in _PLAIN_NUMBERS:
            num_names.append(name if type(name) is str else str(name))
            num_values.append(float(value))
        elif kind is str:
            cat_names.append(name if type(name) is str else str(name))
            cat_values.append(value)
        elif value is None:
            continue
        elif _is_number(value):
            num_names.append(str(name))
            num_values.append(float(value))
        else:
            cat_names.append(str(name))
            cat_values.append(str(value))


def _set_prediction(event: Event, value: Any) -> None:
    if value is None:
        return
    if hasattr(value, "item") and getattr(value, "size", 1) == 1:  # numpy scalars and one-element arrays
        value = value.item()
    if _is_number(value):
        event.prediction = float(value)
    elif isinstance(value, str):
        event.prediction_label = value
    else:
        event.prediction_label = str(value)


def _is_number(value: Any) -> bool:
    if isinstance(value, bool | int | float):
        return True
    return hasattr(value, "dtype") and getattr(value, "ndim", 1) == 0 and value.dtype.kind in "biuf"


class _CallableModule(types.ModuleType):
    """Lets ``from driftwarden.collector import capture`` be called directly: ``capture(...)`` is :func:`capture`."""

    def __call__(self, *args: Any, **kwargs: Any) -> Capture:
        return Capture(*args, **kwargs)  # what capture() returns, one call less on every capture


sys.modules[__name__].__class__ = _CallableModule
