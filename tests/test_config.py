"""Configuration: file discovery, strict validation with one-line errors, model resolution."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from termchat.config import (
    DEFAULT_MODELS,
    NotConfiguredError,
    config_path,
    data_dir,
    load_config,
    save_theme,
)
from termchat.errors import ConfigError, MissingKeyError

ROOT = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_example_config_loads_as_is_and_documents_every_key() -> None:
    example = ROOT / "config.example.toml"
    config = load_config(str(example), env={})
    assert config.warnings == ()
    assert config.default_model == "gpt"
    assert set(config.models) == {"gpt", "claude", "local"}
    text = example.read_text()
    from termchat import config as module

    for key in [*module._TOP_KEYS, *module._MODEL_KEYS]:
        assert key in text, f"config.example.toml does not mention {key}"


def test_xdg_config_home_and_termchat_config_and_flag_choose_the_file(tmp_path: Path) -> None:
    env = {"XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    assert config_path(None, env) == tmp_path / "xdg" / "termchat" / "config.toml"
    env["TERMCHAT_CONFIG"] = str(tmp_path / "env.toml")
    assert config_path(None, env) == tmp_path / "env.toml"
    assert config_path(str(tmp_path / "flag.toml"), env) == tmp_path / "flag.toml"
    assert data_dir({"XDG_DATA_HOME": str(tmp_path)}) == tmp_path / "termchat"


def test_missing_default_file_is_an_empty_config(tmp_path: Path) -> None:
    config = load_config(None, env={"XDG_CONFIG_HOME": str(tmp_path)})
    assert not config.exists and config.models == {}


def test_missing_explicit_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(str(tmp_path / "nope.toml"), env={})


def test_toml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, 'default_model = "gpt"\n\n[models.gpt\nprovider = "openai"\n')
    with pytest.raises(ConfigError) as info:
        load_config(str(path), env={})
    message = str(info.value)
    assert str(path) in message and "line 3" in message and "\n" not in message
    assert info.value.exit_code == 2


def test_unknown_key_names_key_line_and_suggests_the_fix(tmp_path: Path) -> None:
    path = write(tmp_path, '[models.gpt]\nprovider = "openai"\ntemprature = 0.5\n')
    with pytest.raises(ConfigError) as info:
        load_config(str(path), env={})
    message = str(info.value)
    assert "models.gpt.temprature" in message
    assert "line 3" in message
    assert "did you mean 'temperature'" in message


def test_wrong_type_names_the_key_and_expected_type(tmp_path: Path) -> None:
    path = write(tmp_path, '[models.gpt]\nprovider = "openai"\nmax_tokens = "lots"\n')
    with pytest.raises(ConfigError, match=r"'models\.gpt\.max_tokens' \(line 3\); it must be an "
                                          r"integer"):
        load_config(str(path), env={})


def test_bool_is_not_a_number(tmp_path: Path) -> None:
    path = write(tmp_path, '[defaults]\ntemperature = true\n')
    with pytest.raises(ConfigError, match=r"defaults\.temperature"):
        load_config(str(path), env={})


def test_unknown_provider_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, '[models.x]\nprovider = "gemini"\n')
    with pytest.raises(ConfigError, match="unknown provider 'gemini'"):
        load_config(str(path), env={})


def test_default_model_must_exist(tmp_path: Path) -> None:
    path = write(tmp_path, 'default_model = "nope"\n')
    with pytest.raises(ConfigError, match="default_model"):
        load_config(str(path), env={})


def test_world_readable_file_with_a_key_gets_a_warning(tmp_path: Path) -> None:
    path = write(tmp_path, '[models.x]\nprovider = "openai"\napi_key = "sk-secret-123"\n',
                 mode=0o644)
    config = load_config(str(path), env={})
    assert len(config.warnings) == 1
    assert "chmod 600" in config.warnings[0]
    assert "sk-secret-123" not in config.warnings[0]
    path.chmod(0o600)
    assert load_config(str(path), env={}).warnings == ()


def test_aliases_inherit_defaults_and_override_them(tmp_path: Path) -> None:
    path = write(tmp_path, """
default_model = "fast"
[defaults]
temperature = 0.2
idle_timeout = 30
[models.fast]
provider = "anthropic"
model = "claude-haiku-4-5"
temperature = 0.9
[models.plain]
provider = "openai"
""")
    config = load_config(str(path), env={})
    fast = config.resolve_model(None, env={})
    assert (fast.provider, fast.model, fast.temperature, fast.idle_timeout) == \
        ("anthropic", "claude-haiku-4-5", 0.9, 30)
    plain = config.resolve_model("plain", env={})
    assert (plain.model, plain.temperature) == (DEFAULT_MODELS["openai"], 0.2)


def test_provider_colon_model_needs_no_config(tmp_path: Path) -> None:
    config = load_config(None, env={"XDG_CONFIG_HOME": str(tmp_path)})
    env = {"OPENAI_BASE_URL": "http://127.0.0.1:9/v1"}
    model = config.resolve_model("openai:my-local-model", env=env)
    assert (model.provider, model.model, model.base_url) == \
        ("openai", "my-local-model", "http://127.0.0.1:9/v1")
    assert config.resolve_model("anthropic:claude-x", env={}).provider == "anthropic"


def test_standard_environment_variables_pick_a_default_model(tmp_path: Path) -> None:
    config = load_config(None, env={"XDG_CONFIG_HOME": str(tmp_path)})
    assert config.resolve_model(None, env={"ANTHROPIC_API_KEY": "k"}).provider == "anthropic"
    assert config.resolve_model(None, env={"OPENAI_API_KEY": "k"}).provider == "openai"
    with pytest.raises(NotConfiguredError):
        config.resolve_model(None, env={})


def test_unknown_model_name_lists_aliases(tmp_path: Path) -> None:
    path = write(tmp_path, '[models.gpt]\nprovider = "openai"\n')
    config = load_config(str(path), env={})
    with pytest.raises(ConfigError, match=r"Unknown model 'gtp'.*gpt"):
        config.resolve_model("gtp", env={})
    with pytest.raises(ConfigError, match="Unknown provider 'gemini'"):
        config.resolve_model("gemini:pro", env={})


def test_missing_key_names_the_variable_to_set(tmp_path: Path) -> None:
    config = load_config(None, env={"XDG_CONFIG_HOME": str(tmp_path)})
    model = config.resolve_model("anthropic:claude-x", env={})
    with pytest.raises(MissingKeyError, match="set ANTHROPIC_API_KEY") as info:
        model.resolve_key(env={})
    assert info.value.exit_code == 2
    assert model.resolve_key(env={"ANTHROPIC_API_KEY": "abc"}) == "abc"


def test_key_from_a_custom_variable_and_from_a_command(tmp_path: Path) -> None:
    path = write(tmp_path, f"""
[models.env]
provider = "openai"
api_key_env = "MY_KEY"
[models.cmd]
provider = "openai"
api_key_cmd = "{shutil.which('printf')} ' from-cmd\\n'"
[models.failing]
provider = "openai"
api_key_cmd = "{shutil.which('false')}"
""")
    config = load_config(str(path), env={})
    assert config.resolve_model("env", env={}).resolve_key(env={"MY_KEY": "k1"}) == "k1"
    with pytest.raises(MissingKeyError, match="set MY_KEY"):
        config.resolve_model("env", env={}).resolve_key(env={})
    assert config.resolve_model("cmd", env={}).resolve_key(env={}) == "from-cmd"
    with pytest.raises(MissingKeyError, match="api_key_cmd for model 'failing' exited with 1"):
        config.resolve_model("failing", env={}).resolve_key(env={})


def test_out_of_range_values_are_errors(tmp_path: Path) -> None:
    path = write(tmp_path, '[defaults]\ntemperature = 3\n')
    with pytest.raises(ConfigError, match="from 0 to 2"):
        load_config(str(path), env={})
    path = write(tmp_path, '[models.x]\nprovider = "openai"\nmax_tokens = 0\n')
    with pytest.raises(ConfigError, match="above 0"):
        load_config(str(path), env={})



# --- keys and theme -------------------------------------------------------------------------

def test_keys_remap_termchat_bindings_by_id(tmp_path: Path) -> None:
    config = load_config(str(write(tmp_path, '[keys]\nsubmit = "ctrl+s"\nnewline = "enter"\n'
                                             'regenerate = "f5,ctrl+y"\n')), env={})
    assert config.keys == {"submit": "ctrl+s", "newline": "enter", "regenerate": "f5,ctrl+y"}


@pytest.mark.parametrize(("text", "says"), [
    ('[keys]\nsumbit = "ctrl+s"\n', "unknown key 'keys.sumbit' (line 2); did you mean 'submit'"),
    ('[keys]\nsubmit = 5\n', "wrong type for 'keys.submit' (line 2); it must be a string"),
    ('[keys]\nsubmit = "Ctrl S"\n', "not a key list in 'keys.submit' (line 2)"),
    ('theme = 3\n', "wrong type for 'theme' (line 1)")])
def test_bad_keys_and_themes_are_one_sentence_with_the_line(tmp_path: Path, text: str,
                                                           says: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(says)):
        load_config(str(write(tmp_path, text)), env={})


def test_saving_the_theme_keeps_the_rest_of_the_file(tmp_path: Path) -> None:
    text = ('# my settings\ndefault_model = "gpt"\n\n[models.gpt]\nprovider = "openai"\n'
            '# theme = "not this one"\n')
    path = write(tmp_path, text, mode=0o640)
    save_theme(path, "nord")
    assert path.read_text() == ('# my settings\ndefault_model = "gpt"\ntheme = "nord"\n\n'
                                '[models.gpt]\nprovider = "openai"\n# theme = "not this one"\n')
    save_theme(path, "gruvbox")
    assert path.read_text().count("theme = ") == 2  # its own line replaced, the comment kept
    assert load_config(str(path), env={}).theme == "gruvbox"
    assert path.stat().st_mode & 0o777 == 0o640

    fresh = tmp_path / "new" / "config.toml"
    save_theme(fresh, "textual-light")
    assert fresh.read_text() == 'theme = "textual-light"\n'
    assert fresh.stat().st_mode & 0o777 == 0o600
