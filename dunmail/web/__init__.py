"""The web app (FastAPI): customers' links and hosted pages, the AR inbox UI, the JSON API,
health and metrics. ``dunmail.web.app.create_app(services)`` builds it; ``dunmail run`` serves
it. (Nothing is imported here, so ``dunmail.web.accounts``, which ``build_services`` builds,
loads without FastAPI and the whole app.)"""
