"""Switching the database claim off, for the proof that the replica scenario catches it.

``TORTURE_CLAIM_OFF`` says how:
- ``patch:MODULE:ATTR`` (default ``patch:engine.state.db:StateDB.claim_runs``): the
  replicas run through a small launcher that replaces that callable with one that always
  answers "claimed" before ``schedctl serve`` starts. That is the whole claim: the
  writer's claim lane calls ``StateDB.claim_runs``, whose fenced INSERT ... ON CONFLICT
  DO NOTHING is what refuses a run another process (or an older lease) already claimed.
- ``env:NAME=VALUE``: the replicas get that environment variable and start as usual, for
  a switch the engine itself offers.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DEFAULT", "claim_off"]

DEFAULT = "patch:engine.state.db:StateDB.claim_runs"

LAUNCHER = '''
"""schedctl with one callable replaced by "always claimed": the torture suite's proof run."""

import importlib
import os
import sys

module_name, _, path = os.environ["TORTURE_CLAIM_PATCH"].partition(":")
owner = importlib.import_module(module_name)
*parents, name = path.split(".")
for parent in parents:
    owner = getattr(owner, parent)
getattr(owner, name)  # fails loudly if the engine has no such callable any more


def claimed(*args, **kwargs):
    if name == "claim_runs":  # (self, claims, fence): every run claimed, as if new
        return {(claim["job_id"], claim["scheduled_at"]) for claim in args[1]}
    return True


setattr(owner, name, claimed)
print(f"torture: {module_name}:{path} patched to always claim", flush=True)

from engine.surfaces.cli import main  # noqa: E402

sys.exit(main())
'''


def claim_off(project: Path) -> tuple[tuple[str, ...], dict[str, str], str]:
    """(python arguments before ``serve``, extra environment, what was done) for replicas."""
    how = os.environ.get("TORTURE_CLAIM_OFF", DEFAULT)
    if how.startswith("env:"):
        name, _, value = how.removeprefix("env:").partition("=")
        return ("-m", "engine"), {name: value}, f"environment {name}={value}"
    if not how.startswith("patch:"):
        raise ValueError(
            f"TORTURE_CLAIM_OFF must be 'patch:MODULE:ATTR' or 'env:NAME=VALUE', not {how!r}"
        )
    target = how.removeprefix("patch:")
    (project / "torture_noclaim.py").write_text(LAUNCHER.lstrip())
    return ("-m", "torture_noclaim"), {"TORTURE_CLAIM_PATCH": target}, f"patched {target}"
