"""Listeners of resource events, named by the ``event_listeners.<name>.use`` setting (see :mod:`wsgicliquet.events`)."""
