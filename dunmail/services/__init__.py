"""The application's services: one small service per area, each built once in
:func:`dunmail.app.build_services` with its collaborators, and held by the frozen
:class:`dunmail.app.Services`.

Commands and routes make one call on one of them; the queries and transactions live here (and
in the web side's own service modules), never in an adapter.
"""
