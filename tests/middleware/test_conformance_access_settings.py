"""Settings spelled several ways, and the start-up errors of the version settings (PROTOCOL.md §16.1, §1.1)."""
import pytest

from wsgicliquet.settings import ConfigurationError, load_settings


def test_spellings_that_agree_once_coerced_are_no_conflict():
    """An ini string and a Python value for the same setting (``build_pipeline({**ini, "backoff": 5})``)."""
    settings = load_settings({"cliquet.backoff": "5", "backoff": 5, "cliquet.readonly": "true", "readonly": True},
                             environ={})
    assert settings["backoff"] == 5 and settings["readonly"] is True


def test_spellings_that_differ_are_still_a_conflict():
    with pytest.raises(ConfigurationError, match="in conflict"):
        load_settings({"cliquet.backoff": "5", "backoff": 6}, environ={})


@pytest.mark.parametrize("version", ["", "  ", "abc", "v1.2"])
def test_an_unusable_project_version_is_named_at_start_up(version):
    with pytest.raises(ConfigurationError, match="'project_version'"):
        load_settings({"project_version": version}, environ={})


def test_http_api_version_makes_project_version_free_form():
    settings = load_settings({"project_version": "nightly", "http_api_version": "2.1"}, environ={})
    assert settings["http_api_version"] == "2.1"
