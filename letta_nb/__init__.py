"""letta_nb: a Letta-style stateful agent runtime inside a Jupyter kernel.

``letta_nb.connect()`` opens the store and starts the runtime thread; everything else hangs off the
returned client (``client.agents.create``, ``client.agents.messages.create`` ...). The notebook surface
(``%load_ext letta_nb``) is the only part that imports IPython.
"""

from letta_nb.client import Client, connect
from letta_nb.errors import (
    AgentNotFoundError,
    AlreadyExistsError,
    BlockLimitError,
    BlockNotFoundError,
    InvalidArgumentError,
    LettaNBError,
    MemoryEditError,
    ModelNotFoundError,
    NotFoundError,
    ReadOnlyBlockError,
    RuntimeClosedError,
    SQLiteExtensionError,
    StoreError,
    ToolNotFoundError,
    ToolSchemaError,
)
from letta_nb.schemas import AgentState, Block, Message, Passage, Response, StepStats

__version__ = "0.1.0"

__all__ = [
    "connect",
    "Client",
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
]
