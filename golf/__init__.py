"""golf: experiment orchestration and a run database for OpenAI's Parameter Golf challenge.

In a notebook: `golf.runs()` is the run store as a pandas DataFrame, `golf.steps(run_or_group)` the curves.
"""

from golf.notebook import runs, steps
from golf.trainer.source import GOLF_VERSION as __version__

__all__ = ["__version__", "runs", "steps"]
