"""letta_nb: a Letta-style stateful agent runtime inside a Jupyter kernel.

``letta_nb.connect()`` opens the store and starts the runtime thread; everything else hangs off the
returned client (``client.agents.create``, ``client.agents.messages.create`` ...). The notebook surface
(``%load_ext letta_nb``) is the only part that imports IPython.

Every type the API takes, returns, yields or raises is importable from here, and ``__all__`` lists exactly
the public names of this namespace (tests/test_public_api.py derives both from the code).
"""

import importlib as _importlib
import typing as _typing  # (not ``from typing import ...``: every public name here is part of the API)

from letta_nb.errors import (  # errors are cheap (stdlib only) and caught by name: imported now
    AgentBusyError,
    AgentNotFoundError,
    AlreadyExistsError,
    ApprovalError,
    BlockLimitError,
    BlockNotFoundError,
    DimensionMismatchError,
    EmbeddingError,
    FileIngestError,
    InvalidArgumentError,
    LettaNBError,
    MemoryEditError,
    ModelNotFoundError,
    NotFoundError,
    OptionalDependencyError,
    OptionalDependencyWarning,
    PendingApprovalError,
    ProviderError,
    ProviderNotAllowedError,
    ReadOnlyBlockError,
    ReentrantTurnError,
    RuntimeClosedError,
    SandboxUnavailableError,
    SchemaVersionError,
    SettingError,
    SQLiteExtensionError,
    StaleCommitError,
    StoreError,
    StoreWarning,
    ToolNotFoundError,
    ToolSchemaError,
    TurnCancelledError,
    UploadedFileNotFoundError,
)

if _typing.TYPE_CHECKING:  # imported on first use (module ``__getattr__`` below); type checkers see them here
    from letta_nb import probes as probes
    from letta_nb.agentfile import AgentFileError, ImportItem, ImportReport
    from letta_nb.api.chunks import LettaChunk
    from letta_nb.client import AgentRef, Client, connect
    from letta_nb.embeddings.ingest_report import FileResult, IngestReport, UploadedFile
    from letta_nb.notebook.widget import ChatWidget
    from letta_nb.runtime.events import (
        ApprovalRequestEvent,
        AssistantDelta,
        ReasoningDelta,
        StepEvent,
        StopEvent,
        StreamEvent,
        ToolCallEvent,
        ToolReturnEvent,
    )
    from letta_nb.runtime.services.context import ContextWindow
    from letta_nb.runtime.tool_schema import ToolSpec
    from letta_nb.schemas import AgentState, Block, Message, Passage, Response, StepStats
    from letta_nb.serve import ServeHandle
    from letta_nb.store.shared_blocks import SharedBlock

# Where each lazily exported name lives. Importing them eagerly cost ~0.5 s (SQLAlchemy, numpy, httpx, the
# store, the runtime) before ``%load_ext letta_nb`` could print a line (issue 19); now the first use pays.
_LAZY_MODULES: dict[str, tuple[str, ...]] = {
    "letta_nb.agentfile": ("AgentFileError", "ImportItem", "ImportReport"),
    "letta_nb.api.chunks": ("LettaChunk",),
    "letta_nb.client": ("AgentRef", "Client", "connect"),
    "letta_nb.embeddings.ingest_report": ("FileResult", "IngestReport", "UploadedFile"),
    "letta_nb.notebook.widget": ("ChatWidget",),  # imports ipywidgets
    "letta_nb.runtime.events": ("ApprovalRequestEvent", "AssistantDelta", "ReasoningDelta", "StepEvent",
                                "StopEvent", "StreamEvent", "ToolCallEvent", "ToolReturnEvent"),
    "letta_nb.runtime.services.context": ("ContextWindow",),
    "letta_nb.runtime.tool_schema": ("ToolSpec",),
    "letta_nb.schemas": ("AgentState", "Block", "Message", "Passage", "Response", "StepStats"),
    "letta_nb.serve": ("ServeHandle",),  # client.serve()
    "letta_nb.store.shared_blocks": ("SharedBlock",),
}
_LAZY = {name: module for module, names in _LAZY_MODULES.items() for name in names}
_LAZY["probes"] = "letta_nb.probes"  # the re-exported submodule: letta_nb.probes.tools(), .steps(), ...

__version__ = "0.1.0"


def load_ipython_extension(ipython: _typing.Any) -> None:
    """``%load_ext letta_nb``: open the notebook's client and register ``%letta`` (IPython is imported only here)."""
    from letta_nb.notebook import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython: _typing.Any) -> None:
    """``%unload_ext letta_nb``: close the notebook's client and remove the magics."""
    from letta_nb.notebook import unload_ipython_extension as unload

    unload(ipython)


if not _typing.TYPE_CHECKING:  # hidden from type checkers, so ``letta_nb.misspelt`` is an error there, not Any

    def __getattr__(name: str) -> _typing.Any:  # PEP 562: a lazily exported name, imported when first asked for
        module = _LAZY.get(name)
        if module is None:
            raise AttributeError(f"module 'letta_nb' has no attribute {name!r}")
        imported = _importlib.import_module(module)
        value = imported if module == f"letta_nb.{name}" else getattr(imported, name)
        globals()[name] = value  # later lookups are plain attribute reads
        return value


def __dir__() -> list[str]:  # tab completion offers the lazily imported names too
    return sorted({*globals(), *__all__})


__all__ = [
    "connect",
    "Client",
    "ChatWidget",
    "AgentRef",
    "AgentState",
    "Block",
    "SharedBlock",
    "Message",
    "Passage",
    "Response",
    "StepStats",
    "ContextWindow",
    "StreamEvent",
    "ReasoningDelta",
    "AssistantDelta",
    "ToolCallEvent",
    "ToolReturnEvent",
    "ApprovalRequestEvent",
    "StepEvent",
    "StopEvent",
    "LettaChunk",
    "ToolSpec",
    "IngestReport",
    "ImportReport",
    "ImportItem",
    "AgentFileError",
    "FileResult",
    "UploadedFile",
    "ServeHandle",
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
    "ApprovalError",
    "PendingApprovalError",
    "ProviderError",
    "SandboxUnavailableError",
    "StaleCommitError",
    "AgentBusyError",
    "SchemaVersionError",
    "EmbeddingError",
    "OptionalDependencyError",
    "DimensionMismatchError",
    "SettingError",
    "ProviderNotAllowedError",
    "FileIngestError",
    "UploadedFileNotFoundError",
    "StoreWarning",
    "OptionalDependencyWarning",
]
