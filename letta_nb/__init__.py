"""letta_nb: a Letta-style stateful agent runtime inside a Jupyter kernel.

``letta_nb.connect()`` opens the store and starts the runtime thread; everything else hangs off the
returned client (``client.agents.create``, ``client.agents.messages.create`` ...). The notebook surface
(``%load_ext letta_nb``) is the only part that imports IPython.
"""

from letta_nb import (
    probes as probes,  # re-exported submodule: letta_nb.probes.tools(), .steps(), ... (pandas loaded on use)
)
from letta_nb.client import Client, connect
from letta_nb.errors import (
    AgentBusyError,
    AgentNotFoundError,
    AlreadyExistsError,
    BlockLimitError,
    BlockNotFoundError,
    InvalidArgumentError,
    LettaNBError,
    MemoryEditError,
    ModelNotFoundError,
    NotFoundError,
    ProviderError,
    ReadOnlyBlockError,
    ReentrantTurnError,
    RuntimeClosedError,
    SandboxUnavailableError,
    SQLiteExtensionError,
    StaleCommitError,
    StoreError,
    ToolNotFoundError,
    ToolSchemaError,
    TurnCancelledError,
)
from letta_nb.schemas import AgentState, Block, Message, Passage, Response, StepStats

__version__ = "0.1.0"


def load_ipython_extension(ipython):  # ``%load_ext letta_nb``; IPython is imported only here
    from letta_nb.notebook import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython):
    from letta_nb.notebook import unload_ipython_extension as unload

    unload(ipython)


def __getattr__(name):  # ChatWidget imports ipywidgets, so only when asked for
    if name == "ChatWidget":
        from letta_nb.notebook.widget import ChatWidget

        return ChatWidget
    raise AttributeError(f"module 'letta_nb' has no attribute {name!r}")

__all__ = [
    "connect",
    "Client",
    "ChatWidget",
    "AgentState",
    "Block",
    "Message",
    "Passage",
    "Response",
    "StepStats",
    "LettaNBError",
    "InvalidArgumentError",
    "NotFoundError",
    "AgentNotFoundError",
    "BlockNotFoundError",
    "ToolNotFoundError",
    "ModelNotFoundError",
    "AlreadyExistsError",
    "BlockLimitError",
    "ReadOnlyBlockError",
    "RuntimeClosedError",
    "MemoryEditError",
    "ToolSchemaError",
    "StoreError",
    "SQLiteExtensionError",
    "TurnCancelledError",
    "ReentrantTurnError",
    "ProviderError",
    "SandboxUnavailableError",
    "StaleCommitError",
    "AgentBusyError",
]
