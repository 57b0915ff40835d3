import pytest

from apwa_spark.config import ConfigError, Settings, env_name, known_keys, read_conf_file


def test_env_names_follow_the_conf_keys():
    assert env_name("spark.apwa.llm.baseUrl") == "APWA_LLM_BASE_URL"
    assert env_name("spark.apwa.summarize.chunkTokens") == "APWA_SUMMARIZE_CHUNK_TOKENS"


def test_precedence_defaults_file_env_overrides(tmp_path):
    conf = tmp_path / "apwa.conf"
    conf.write_text("# comment\nspark.apwa.llm.concurrency 3\nspark.apwa.llm.timeout=30\nspark.other.key 1\n")
    env = {"APWA_LLM_CONCURRENCY": "5"}
    settings = Settings.load(conf_file=conf, env=env, overrides={"spark.apwa.llm.maxRetries": "7"})
    assert settings.llm.concurrency == 5  # env beats the file
    assert settings.llm.timeout == 30.0  # from the file
    assert settings.llm.max_retries == 7  # override
    assert settings.summarize.max_tokens == 96  # code default
    assert read_conf_file(tmp_path / "missing.conf") == {}


def test_repo_defaults_file_only_names_known_keys():
    from apwa_spark.config import DEFAULT_CONF_FILE

    keys = read_conf_file(DEFAULT_CONF_FILE)
    assert keys and set(keys) <= known_keys()


def test_unknown_key_is_an_error_naming_it():
    with pytest.raises(ConfigError, match="spark.apwa.llm.baseURL"):
        Settings.load(env={}, overrides={"spark.apwa.llm.baseURL": "http://x"})


def test_invalid_value_is_an_error():
    with pytest.raises(ConfigError, match="concurrency"):
        Settings.load(env={}, overrides={"spark.apwa.llm.concurrency": "0"})


def test_api_key_never_in_as_keys(tmp_path):
    settings = Settings.load(env={"APWA_LLM_API_KEY": "sk-secret-123"})
    assert settings.api_key() == "sk-secret-123"
    assert "sk-secret-123" not in repr(settings)
    assert "sk-secret-123" not in str(settings.as_keys())


def test_server_slots_belong_to_the_base_url():
    embedded = Settings.load(env={}, overrides={"spark.apwa.llm.baseUrl": "http://127.0.0.1:8080/v1", "spark.apwa.llm.serverSlots": "4"})
    assert embedded.with_overrides(**{"spark.apwa.llm.concurrency": "8"}).llm.server_slots == 4
    assert embedded.with_overrides(**{"spark.apwa.llm.baseUrl": "http://127.0.0.1:8080/v1"}).llm.server_slots == 4
    assert embedded.with_overrides(**{"spark.apwa.llm.baseUrl": "http://vllm:8000/v1"}).llm.server_slots is None
    moved = embedded.with_overrides(**{"spark.apwa.llm.baseUrl": "http://vllm:8000/v1", "spark.apwa.llm.serverSlots": "16"})
    assert moved.llm.server_slots == 16


def test_as_keys_shows_no_credentials_of_the_base_url_but_rebuilt_settings_keep_them():
    settings = Settings.load(env={}, overrides={"spark.apwa.llm.baseUrl": "https://alice:s3cret@gateway.example.com:8443/v1"})
    shown = settings.as_keys()["spark.apwa.llm.baseUrl"]
    assert shown == "https://gateway.example.com:8443/v1"  # what manifests and logs get
    assert "s3cret" not in repr(settings.as_keys())
    rebuilt = settings.with_overrides(**{"spark.apwa.llm.concurrency": "2"})
    assert rebuilt.llm.base_url == "https://alice:s3cret@gateway.example.com:8443/v1"  # requests still carry them


def test_the_run_registry_is_a_local_folder_not_an_object_store_uri(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for uri in ("s3a://bucket/runs", "dbfs:/runs"):
        with pytest.raises(ConfigError, match="run.registry must be a local folder"):
            Settings.load(env={}, overrides={"spark.apwa.run.registry": uri})
    assert not list(tmp_path.iterdir())  # no `s3a:` or `dbfs:` folder made on the way
    assert Settings.load(env={}, overrides={"spark.apwa.run.registry": "file:///tmp/runs"}).run.registry == "file:///tmp/runs"


def test_prices_turn_tokens_into_money_and_none_without_them():
    assert Settings.load(env={}).price.cost(1000, 1000) is None
    priced = Settings.load(env={}, overrides={"spark.apwa.price.inputPer1M": "0.15", "spark.apwa.price.outputPer1M": "0.6"})
    assert priced.price.cost(2_000_000, 500_000) == pytest.approx(0.3 + 0.3) and priced.price.currency == "USD"
    with pytest.raises(ConfigError, match="inputPer1M|input_per_1m"):
        Settings.load(env={}, overrides={"spark.apwa.price.inputPer1M": "-1"})
