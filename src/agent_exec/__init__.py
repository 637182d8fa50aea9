"""agent-exec: a job runner for AI-agent harnesses.

The CLI (``agent-exec``) and this library share one job store and one supervisor.
"""

from __future__ import annotations

__version__ = "0.2.3"
