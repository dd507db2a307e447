"""The web app (FastAPI): customers' links and hosted pages, the AR inbox UI, the JSON API,
health and metrics. ``create_app(services)`` builds it; ``dunmail run`` serves it."""

from dunmail.web.app import create_app

__all__ = ["create_app"]
