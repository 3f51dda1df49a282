"""Runtime services: what the public API does, one module per concept, below :mod:`letta_nb.client`.

``client.py`` checks the shape of its arguments (``letta_nb/_client_args.py``) and calls one function
here; the rules of the domain (a block's value within its limit, which tools an agent may be given) and
every read and write of the store live in these modules (the tool registry itself, which also refuses a
base tool's name, stays the runtime's: the agent loop resolves tools through it too):

- :mod:`.lookup`: finding an agent by id, name or AgentState (every service reads agents through it);
- :mod:`.agents`: create, list, change settings, delete;
- :mod:`.blocks`: core-memory blocks;
- :mod:`.tools`: register, trust and look up tools; attach them to and detach them from an agent;
- :mod:`.messages`: recall memory and cancelling a turn (turns themselves: ``runtime/agent_loop.py``);
- :mod:`.passages` and :mod:`.files`: archival memory, one passage at a time or whole files;
- :mod:`.store_info`: read-only SQL and where the store is.

Invariant: every change of an existing agent goes through
:meth:`Runtime.agent_lease <letta_nb.runtime.runtime.Runtime.agent_lease>`: the agent's lock in this process,
its lease across processes, and a write fenced by the lease's token, in that one place. Changes to what
sessions cache (settings, blocks, tools, deletion) use it through ``Runtime.agent_change``, which also drops
the cached session after; archival memory (passages, files) holds it only around each commit (see
:mod:`.passages` and :mod:`.files`).

Each function takes the :class:`~letta_nb.runtime.runtime.Runtime` first and runs on the runtime loop.
"""
