"""golf: experiment orchestration and a run database for OpenAI's Parameter Golf challenge."""

from golf.trainer.source import GOLF_VERSION as __version__

__all__ = ["__version__"]
