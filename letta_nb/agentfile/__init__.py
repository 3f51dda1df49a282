"""Agent Files (``.af``): Letta's format for a saved agent, imported into and exported from letta_nb.

Letta users bring agents as Agent Files; letta_nb is where they can keep running them in a notebook. The
format is Letta's ``AgentFileSchema``; this package reads and checks it (``_schema``), maps models
(``_models``), tools (``_tools``) and messages (``_messages``) to letta_nb's, imports everything in one
transaction (``_import``), reports what it did (``_report``), and writes agents back in a form Letta's
importer accepts (``_export``). The public entry points are ``client.agents.import_file`` /
``export_file`` and ``%letta import`` / ``%letta export``.
"""

from typing import Any

from letta_nb.agentfile._report import ImportItem, ImportReport
from letta_nb.agentfile._schema import META_KEY, AgentFile, AgentFileError, read_agent_file


# The import and export paths pull in the model and embedder registries (httpx, the openai SDK's
# warm-up): loaded on first use, not by ``import letta_nb``, whose namespace exports the report types.
async def import_agent_file(*args: Any, **kwargs: Any) -> ImportReport:
    """See :func:`letta_nb.agentfile._import.import_agent_file`."""
    from letta_nb.agentfile._import import import_agent_file as run

    return await run(*args, **kwargs)


async def export_agent_file(*args: Any, **kwargs: Any) -> Any:
    """See :func:`letta_nb.agentfile._export.export_agent_file`."""
    from letta_nb.agentfile._export import export_agent_file as run

    return await run(*args, **kwargs)

__all__ = ["META_KEY", "AgentFile", "AgentFileError", "ImportItem", "ImportReport", "export_agent_file",
           "import_agent_file", "read_agent_file"]
