"""Agent Files (``.af``): Letta's format for a saved agent, imported into and exported from letta_nb.

Letta users bring agents as Agent Files; letta_nb is where they can keep running them in a notebook. The
format is Letta's ``AgentFileSchema``; this package reads and checks it (``_schema``), maps models
(``_models``), tools (``_tools``) and messages (``_messages``) to letta_nb's, imports everything in one
transaction (``_import``), reports what it did (``_report``), and writes agents back in a form Letta's
importer accepts (``_export``). The public entry points are ``client.agents.import_file`` /
``export_file`` and ``%letta import`` / ``%letta export``.
"""

from letta_nb.agentfile._export import export_agent_file
from letta_nb.agentfile._import import META_KEY, import_agent_file
from letta_nb.agentfile._report import ImportItem, ImportReport
from letta_nb.agentfile._schema import AgentFile, AgentFileError, read_agent_file

__all__ = ["META_KEY", "AgentFile", "AgentFileError", "ImportItem", "ImportReport", "export_agent_file",
           "import_agent_file", "read_agent_file"]
