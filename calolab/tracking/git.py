"""The git state a run was made from: commit and whether the work tree had local changes."""

from __future__ import annotations

import subprocess
from pathlib import Path


def git_state(repo: Path) -> dict[str, str]:
    """``{"git.commit": sha, "git.dirty": "true"|"false"}``, or "unknown" outside a repository."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
        return {"git.commit": sha, "git.dirty": "true" if status.strip() else "false"}
    except (OSError, subprocess.SubprocessError):
        return {"git.commit": "unknown", "git.dirty": "unknown"}
