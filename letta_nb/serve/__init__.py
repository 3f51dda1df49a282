"""Letta's REST API served from the kernel, for the letta-client SDK and tools built on it.

``client.serve()`` (or ``%letta serve``) makes the agents of a kernel reachable on 127.0.0.1 by code written
for Letta's server, unchanged: ``Letta(base_url=handle.url, api_key=handle.token)``. It needs the ``serve``
extra (starlette, uvicorn). Modules: ``_server`` (the thread, the socket, stopping), ``_auth`` (the bearer
gate and the request probe), ``_app`` (routing, the 501 for unserved routes), ``_routes_*`` (one resource
each, each a thin shell over the client's async API), ``_wire`` (Letta's JSON shapes) and ``_sse`` (streams).
"""

from __future__ import annotations

from letta_nb.serve._server import HOST, ServeHandle, start

__all__ = ["HOST", "ServeHandle", "start"]
