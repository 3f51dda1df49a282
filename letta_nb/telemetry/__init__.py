"""Telemetry of one runtime: OpenTelemetry metrics and spans, DB pool monitoring, probe DataFrames.

``recorder.Telemetry`` is what the runtime talks to (a few cheap calls per step); ``providers`` owns the
OpenTelemetry SDK objects; ``pool`` watches SQLAlchemy's pool; ``spans`` rebuilds a step's span tree
from recorded timings; ``names`` is the metric registry; ``frames`` and ``plots`` turn it all into
pandas DataFrames and matplotlib figures (pandas and matplotlib are imported only there, lazily).
The public face is :mod:`letta_nb.probes`.
"""

from letta_nb.telemetry.names import METRICS, SPAN_NAMES
from letta_nb.telemetry.recorder import Telemetry

__all__ = ["Telemetry", "METRICS", "SPAN_NAMES"]
