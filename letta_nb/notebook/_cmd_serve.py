"""``%letta serve [--port N] [--stop]``: Letta's REST API for this kernel's agents, on 127.0.0.1.

A thin shell over ``client.serve()`` (letta_nb/serve/). The bearer token is shown once, in the cell's output
that started the server, and kept nowhere else in the notebook: the handle lives on the client, which stops
it on ``--stop``, ``%unload_ext`` and kernel shutdown.
"""

from __future__ import annotations

from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic_arguments import argument, magic_arguments

from letta_nb.notebook._commands import command
from letta_nb.notebook.display import Notice


@command("serve", "serve Letta's REST API on 127.0.0.1 (for the letta-client SDK)")
@magic_arguments("letta serve")
@argument("--port", type=int, default=0, help="port on 127.0.0.1 (default 0: any free port)")
@argument("--stop", action="store_true", help="stop the server this kernel runs")
def serve(args: Any, session: Any, shell: Any) -> Any:
    """Serve this kernel's agents over Letta's REST API on 127.0.0.1, so code written for Letta's server
    (the letta-client SDK) runs against them unchanged. Every request needs the bearer token shown once
    here: Letta(base_url=URL, api_key=TOKEN). --stop stops it."""
    client = session.client
    if args.stop:
        running = list(client._servers)
        if not running:
            raise UsageError("No server is running in this kernel; start one with %letta serve.")
        for handle in running:
            handle.stop()
        return Notice(f"Stopped serving at {running[0].url}.")
    handle = client.serve(port=args.port)
    return Notice(f"Serving Letta's REST API at {handle.url} (127.0.0.1 only). Bearer token, shown once: "
                  f"{handle.token}\nfrom letta_client import Letta; "
                  f"client = Letta(base_url={handle.url!r}, api_key=TOKEN). Stop: %letta serve --stop", handle)
