"""Whose data is this? Signatures that tell the rows this user wrote from rows someone else wrote.

A store is a file, and files travel: a shared SQLite file, a teammate's store on JupyterHub, an imported
agent. Whatever such a file says must not decide what runs in this kernel or where this user's API keys
go. Like Jupyter's notebook trust, each user has a secret key (``$LETTA_NB_HOME/trust_key``, mode 0600,
made on first use; a sandboxed tool never sees that directory), and the runtime signs with it, by HMAC,
the fields of every row whose content decides something dangerous:

- a tool's source, schema and isolation settings: a tool row with no valid signature is never executed
  in the kernel, whatever its stored ``sandbox`` flag says; it runs only in the strict sandbox, until the
  user re-registers it or calls ``client.tools.trust(name)`` after reading its source;
- an agent's model and embedding specs: an API key is sent to a spec's own ``?base_url=`` only if the user
  wrote that spec (a valid signature); otherwise keys go only to the endpoints configured in the
  environment or by default.

Rows are still *read* whatever their signature (reading an agent never runs code: tools are compiled
from source only when called). A signature binds the fields to their row's identity (the tool's name, the
agent's id), so a signed value cannot be moved onto another row.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from letta_nb.errors import LettaNBError
from letta_nb.store.records import ToolRecord, columns

__all__ = ["KEY_FILE", "sign", "verify", "tool_fields", "agent_fields", "TrustKeyError"]

KEY_FILE = "trust_key"

# Fields that are bookkeeping, not content: never signed.
_UNSIGNED_TOOL_COLUMNS = frozenset({"id", "created_at", "updated_at", "signature"})


class TrustKeyError(LettaNBError):
    """The user's trust key cannot be read or created."""


def _home() -> Path:
    from letta_nb.store.engine import default_home

    return default_home()


@functools.lru_cache(maxsize=4)
def _key(home: Path) -> bytes:
    path = home / KEY_FILE
    try:
        return bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as e:
        raise TrustKeyError(f"cannot read the trust key {str(path)!r} ({type(e).__name__}); delete it to make a "
                            "new one (rows signed with the old key will then count as someone else's).") from None
    try:
        home.mkdir(parents=True, exist_ok=True)
        # Written aside, then linked into place: of two kernels creating it at once, one link wins and
        # both read the winner's key.
        tmp = home / f".{KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
        return bytes.fromhex(path.read_text().strip())
    except (OSError, ValueError) as e:
        why = e.strerror if isinstance(e, OSError) else e
        raise TrustKeyError(f"cannot create the trust key in {str(home)!r} ({type(e).__name__}: {why}); "
                            "set LETTA_NB_HOME to a writable directory.") from None


def _digest(kind: str, fields: Mapping[str, Any]) -> str:
    text = json.dumps({"kind": kind, **fields}, sort_keys=True, separators=(",", ":"), default=str)
    return hmac.new(_key(_home()), text.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()


def sign(kind: str, fields: Mapping[str, Any]) -> str:
    """This user's signature of ``fields`` (a ``kind`` of row: ``"tool"`` or ``"agent"``)."""
    return _digest(kind, fields)


def verify(kind: str, fields: Mapping[str, Any], signature: str | None) -> bool:
    """Whether ``signature`` is this user's signature of ``fields``."""
    if not signature or not isinstance(signature, str):
        return False
    return hmac.compare_digest(_digest(kind, fields), signature)


def tool_fields(tool: ToolRecord) -> dict[str, Any]:
    """The signed content of a tool: every stored field but the bookkeeping ones (the same keys and values
    as its row's columns, so signatures made when tools were signed as rows still verify)."""
    fields = {k: v for k, v in columns(tool).items() if k not in _UNSIGNED_TOOL_COLUMNS}
    if not fields.get("requires_approval"):  # signatures made before migration 0007 still verify
        fields.pop("requires_approval", None)
    return fields


def agent_fields(agent_id: str, model: str, embedding: str) -> dict[str, Any]:
    """The signed content of an agent: which endpoints its model and embedder talk to."""
    return {"id": agent_id, "model": model, "embedding": embedding}
