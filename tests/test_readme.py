"""The README documents every setting and starts with the two commands of a fresh machine."""
from pathlib import Path

from wsgicliquet.settings import SETTINGS

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_every_setting_is_documented_with_its_default():
    for name in SETTINGS:
        assert f"| `{name}` |" in README, name


def test_readme_starts_with_the_setup_and_test_commands():
    first_block = README.split("```sh", 1)[1].split("```", 1)[0].strip().splitlines()
    assert "wsgicliquet serve --ini examples/flask_app/app.ini" in first_block[0]
    assert "pip install -e '.[dev]'" in first_block[0]
    assert first_block[1] == ".venv/bin/python -m pytest"
