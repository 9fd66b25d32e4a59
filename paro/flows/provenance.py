"""What every results file and long run shares: the commit and command that produced it, and progress lines."""

import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

__all__ = ["git_commit", "provenance", "progress"]


def git_commit():
    """The commit of the running code (with ``-dirty`` when tracked files outside ``results/`` have changes)
    from the git checkout this package runs from, or ``"paro <version> (installed)"`` for an installed wheel."""
    repo = Path(__file__).resolve().parent.parent.parent
    if not (repo / ".git").exists():
        return f"paro {version('paro')} (installed)"
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                             check=True).stdout.strip()
        # Changes under results/ are what benches write, not code: they do not make the tree dirty.
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!results"],
                               cwd=repo, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha + ("-dirty" if dirty else "")


def provenance():
    """What every results file names: the commit of the code and the command that produced it."""
    return {"commit": git_commit(), "command": " ".join(["paro", *sys.argv[1:]])}


def progress(message):
    print(f"[paro] {message}", file=sys.stderr, flush=True)
