"""Settings: TOML, environment overrides, and errors that name the bad key."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.settings import SettingsError, load_settings

EXAMPLE = Path(__file__).resolve().parents[1] / "radpair.example.toml"


def test_example_file_is_valid_and_matches_defaults() -> None:
    from_file = load_settings(EXAMPLE, environ={})
    assert from_file == load_settings(None, environ={})


def test_environment_overrides_file(tmp_path: Path) -> None:
    cfg = tmp_path / "s.toml"
    cfg.write_text('data_dir = "/srv/a"\n[listener]\nport = 104\nae_title = "FROMFILE"\n')
    s = load_settings(cfg, environ={"RADPAIR_LISTENER_PORT": "2104", "RADPAIR_DATA_DIR": "/srv/b",
                                    "RADPAIR_LISTENER_ALLOWED_PEERS": '[{ae_title = "PACS", host = "10.0.0.5"}]'})
    assert s.listener.port == 2104
    assert s.listener.ae_title == "FROMFILE"
    assert str(s.data_dir) == "/srv/b"
    assert s.listener.allowed_peers[0].host == "10.0.0.5"


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"RADPAIR_LISTENER_PORT": "eleven"}, "listener.port"),
        ({"RADPAIR_LISTENER_PORT": "70000"}, "listener.port"),
        ({"RADPAIR_LISTENER_COLOUR": "blue"}, "listener.colour"),
        ({"RADPAIR_TRITON_MODE": "cloud"}, "triton.mode"),
        ({"RADPAIR_LISTENER_ON_CHANGED_DUPLICATE": "merge"}, "listener.on_changed_duplicate"),
    ],
)
def test_bad_values_name_the_key(env: dict[str, str], key: str) -> None:
    with pytest.raises(SettingsError, match=key.replace(".", r"\.")):
        load_settings(None, environ=env)


def test_bad_toml_is_reported(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[listener\nport = 1")
    with pytest.raises(SettingsError, match="not valid TOML"):
        load_settings(cfg, environ={})
