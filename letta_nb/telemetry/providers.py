"""OpenTelemetry providers owned by one runtime: an in-memory metric reader, an in-memory span
exporter, and OTLP exporters when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set.

Why not the global providers: a notebook re-runs cells and may ``connect()`` twice; global providers
can be set only once per process, and two runtimes would mix their numbers. Each runtime builds its own
``MeterProvider`` and ``TracerProvider`` here and never registers them globally, so closing or resetting
one runtime leaves every other (and any OpenTelemetry setup of the user's) alone.

The SDK is imported when a :class:`Providers` is first built (the first probe read), not at
``import letta_nb``: it costs ~100 ms, which ``%load_ext`` should not pay.
"""

from __future__ import annotations

import collections
import importlib
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from letta_nb.errors import InvalidArgumentError, OptionalDependencyError
from letta_nb.telemetry.names import METRICS

__all__ = ["Providers", "otlp_settings"]

_OTLP_MODULES = {
    "http/protobuf": ("opentelemetry.exporter.otlp.proto.http", "opentelemetry-exporter-otlp-proto-http"),
    "grpc": ("opentelemetry.exporter.otlp.proto.grpc", "opentelemetry-exporter-otlp-proto-grpc"),
}


def otlp_settings() -> str | None:
    """The OTLP protocol to export with, or None when no endpoint is configured.

    Raises :class:`OptionalDependencyError` when an endpoint is set but its exporter package is missing
    (:class:`InvalidArgumentError` for an unknown protocol): exporting nothing while the user expects a
    dashboard to fill is worse.
    """
    if not os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return None
    protocol = os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf").strip().lower()
    if protocol == "http/json":
        protocol = "http/protobuf"  # the Python exporters speak protobuf over HTTP only
    if protocol not in _OTLP_MODULES:
        raise InvalidArgumentError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r} is not supported; expected one of "
            f"{', '.join(_OTLP_MODULES)}. Unset it for the default (http/protobuf)."
        )
    module, package = _OTLP_MODULES[protocol]
    try:
        importlib.import_module(module)
    except ImportError:
        raise OptionalDependencyError(
            f"OTEL_EXPORTER_OTLP_ENDPOINT is set ({os.environ['OTEL_EXPORTER_OTLP_ENDPOINT']!r}) but the OTLP "
            f"exporter for {protocol} is not installed. Run `%pip install {package}`, or unset "
            "OTEL_EXPORTER_OTLP_ENDPOINT to keep telemetry in memory only."
        ) from None
    return protocol


class BoundedSpanExporter:
    """An in-memory span exporter that keeps the newest ``maxlen`` spans (the SDK's keeps every span)."""

    def __init__(self, maxlen: int) -> None:
        self._spans: collections.deque[Any] = collections.deque(maxlen=maxlen)
        self._lock = threading.Lock()

    def export(self, spans: Sequence[Any]) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        with self._lock:
            self._spans.extend(spans)
        return SpanExportResult.SUCCESS

    def get_finished_spans(self) -> tuple[Any, ...]:
        with self._lock:
            return tuple(self._spans)

    def clear(self) -> None:
        with self._lock:
            self._spans.clear()

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class Providers:
    """One MeterProvider + TracerProvider pair with every metric of :data:`METRICS` created.

    ``gauges`` is called at collection time for the ``gauge_*`` metrics (name -> value); observable
    gauges cost nothing until someone reads them.
    """

    def __init__(self, *, otlp: str | None, max_spans: int, gauges: Callable[[], dict[str, int]]) -> None:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader, PeriodicExportingMetricReader
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

        resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "letta_nb")})
        self.reader = InMemoryMetricReader()
        readers: list[Any] = [self.reader]
        self.span_exporter = BoundedSpanExporter(max_spans)
        self.tracer_provider = TracerProvider(resource=resource, shutdown_on_exit=False)
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.span_exporter))  # type: ignore[arg-type]
        if otlp is not None:
            module = importlib.import_module(_OTLP_MODULES[otlp][0] + ".metric_exporter")
            readers.append(PeriodicExportingMetricReader(module.OTLPMetricExporter()))
            traces = importlib.import_module(_OTLP_MODULES[otlp][0] + ".trace_exporter")
            self.tracer_provider.add_span_processor(BatchSpanProcessor(traces.OTLPSpanExporter()))
        self.meter_provider = MeterProvider(metric_readers=readers, resource=resource, shutdown_on_exit=False)
        meter = self.meter_provider.get_meter("letta_nb")
        self.tracer = self.tracer_provider.get_tracer("letta_nb")
        self.instruments: dict[str, Any] = {}
        for spec in METRICS.values():
            if spec.kind == "counter":
                self.instruments[spec.name] = meter.create_counter(spec.name, spec.unit, spec.description)
            elif spec.kind == "histogram":
                self.instruments[spec.name] = meter.create_histogram(spec.name, spec.unit, spec.description)
            else:
                meter.create_observable_gauge(spec.name, [_gauge_callback(spec.name, gauges)], spec.unit,
                                              spec.description)
        self._closed = False

    def add(self, name: str, value: float, attributes: dict[str, Any] | None = None) -> None:
        self.instruments[name].add(value, attributes)

    def record(self, name: str, value: float, attributes: dict[str, Any] | None = None) -> None:
        self.instruments[name].record(value, attributes)

    def collect(self) -> Any:
        return self.reader.get_metrics_data()

    def shutdown(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


def _gauge_callback(name: str, gauges: Callable[[], dict[str, int]]) -> Callable[[Any], Iterable[Any]]:
    def observe(_options: Any) -> Iterable[Any]:
        from opentelemetry.metrics import Observation

        value = gauges().get(name)
        return [] if value is None else [Observation(value)]

    return observe
