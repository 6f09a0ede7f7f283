"""What every backend can store: no NUL character, no lone surrogate, whatever else the string holds."""
from __future__ import annotations

import pytest

from wsgicliquet.permission import is_storable


@pytest.mark.parametrize("value, storable", [
    pytest.param("basicauth:" + "c2c5" * 16, True, id="ascii"),
    pytest.param("", True, id="empty"),
    pytest.param("a\x00b", False, id="ascii-nul"),
    pytest.param("\x00", False, id="nul-alone"),
    pytest.param("remoteuser:élodie 😀", True, id="unicode"),
    pytest.param("élodie\x00", False, id="unicode-nul"),
    pytest.param("a\ud800b", False, id="lone-surrogate"),
    pytest.param("\udfff", False, id="low-surrogate"),
])
def test_is_storable(value: str, storable: bool) -> None:
    assert is_storable(value) is storable
