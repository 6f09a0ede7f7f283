"""The WSGI types every module annotates with (PEP 3333)."""
from typing import Any, Callable, Dict, Iterable

__all__ = ["Environ", "StartResponse", "WSGIApp"]

Environ = Dict[str, Any]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]
