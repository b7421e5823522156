"""Settings: TOML, environment overrides, and errors that name the bad key."""

from __future__ import annotations

from pathlib import Path

import pytest

from radpair.core.config import ConfigError
from radpair.core.settings import load_settings

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
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_settings(None, environ=env)


def test_bad_toml_is_reported(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[listener\nport = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(cfg, environ={})


def test_training_config_reads_its_own_variables_and_set_overrides(tmp_path: Path) -> None:
    from radpair.training.config import load_config

    path = tmp_path / "train.toml"
    path.write_text("seed = 3\n[pretrain]\nepochs = 5\n")
    config = load_config(path, ["finetune.folds=4"], environ={"RADPAIR_TRAIN_PRETRAIN_EPOCHS": "7",
                                                             "RADPAIR_LISTENER_PORT": "1"})
    assert (config.seed, config.pretrain.epochs, config.finetune.folds) == (3, 7, 4)
    with pytest.raises(ConfigError, match=r"training config key 'pretrain\.epochs' is 'many'; expected int"):
        load_config(path, environ={"RADPAIR_TRAIN_PRETRAIN_EPOCHS": "many"})
    with pytest.raises(ConfigError, match=r"unknown training config key 'pretrain\.epoch'"):
        load_config(path, ["pretrain.epoch=3"], environ={})


def test_a_key_of_two_types_takes_either_and_names_both_when_refused() -> None:
    """``finetune.class_trains_encoder`` is a bool or "auto", ``head_lr_factor`` a number or "auto"."""
    from radpair.training.config import load_config

    assert load_config(None, environ={}).finetune.class_trains_encoder == "auto"
    config = load_config(None, ["finetune.class_trains_encoder=true", "finetune.head_lr_factor=2"], environ={})
    assert config.finetune.class_trains_encoder is True and config.finetune.head_lr_factor == 2.0
    with pytest.raises(ConfigError, match=r"'finetune\.class_trains_encoder' is 'yes'; expected bool or 'auto'"):
        load_config(None, ["finetune.class_trains_encoder=yes"], environ={})
    with pytest.raises(ConfigError, match=r"'finetune\.head_lr_factor' is 'fast'; expected float or 'auto'"):
        load_config(None, environ={"RADPAIR_TRAIN_FINETUNE_HEAD_LR_FACTOR": "fast"})


def test_settings_ignore_the_training_variables() -> None:
    assert load_settings(None, environ={"RADPAIR_TRAIN_PRETRAIN_EPOCHS": "7"}).listener.port == 11112


def test_task_file_errors_name_the_key_and_the_file(tmp_path: Path) -> None:
    from radpair.core.task import load_task

    bad = tmp_path / "task.toml"
    bad.write_text('name = "t"\n[[classes]]\nname = "a"\ncode = "A"\n[[classes]]\nname = "b"\n'
                   'code = {value = "B", scheme = "99X", meaning = "b"}\n')
    with pytest.raises(ConfigError, match=rf"task key 'classes\[0\]\.code' must be a table \(in {bad}\)"):
        load_task(bad)
    with pytest.raises(ConfigError, match="task file .* does not exist"):
        load_task(tmp_path / "missing.toml")


@pytest.mark.parametrize("path", ["triton_models/shipped_model.toml", "tests/bench/configs/gpu.toml"])
def test_committed_training_configs_load(path: str) -> None:
    """The shipped model's and the GPU benchmark's configurations stay valid as the schema moves."""
    from radpair.training.config import load_config

    config = load_config(Path(__file__).parent.parent / path, environ={})
    assert config.pretrain.batch_size >= 2 and config.finetune.folds >= 2
