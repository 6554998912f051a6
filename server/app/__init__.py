"""vfnet.server.app: the HTTP detection service (FastAPI). Depends on vfnet.server.runtime only."""

from .main import create_app
from .settings import ServeSettings

__all__ = ["ServeSettings", "create_app"]
