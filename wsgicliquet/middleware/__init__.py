"""Independent WSGI middlewares, one feature per module; each usable alone around any WSGI app.

Convention: ``Class(app, *, option=default)``, ``Class.from_settings(app, settings)``, and a module-level
PasteDeploy ``filter_factory``.  Configuration is computed once in ``__init__``; per-request state lives in locals.
"""
