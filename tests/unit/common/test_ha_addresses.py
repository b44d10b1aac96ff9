"""How the HA half-stack's addresses are written in config files and etcd: comma-separated member
lists for etcd and PostgreSQL, Sentinel lists for Redis; a bad entry is refused at load time,
named, before anything connects."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from bai.common.config import ConfigError, EtcdConfig, load_config
from bai.common.redis import DEFAULT_SERVICE_NAME, RedisTarget
from bai.manager.config import DBConfig, ManagerConfig
from bai.webserver.config import RedisSection, WebserverConfig


def test_etcd_addr_is_one_member_or_a_comma_list() -> None:
    assert EtcdConfig().addr == "127.0.0.1:2379"
    assert EtcdConfig(addr="etcd1").addr == "etcd1:2379"
    assert EtcdConfig(addr=" h1:2379, h2:2380 ,h3").addr == "h1:2379,h2:2380,h3:2379"


@pytest.mark.parametrize("addr", ["", "h1:2379,", "h1:notaport", "h1:70000", "http://h1:2379"])
def test_a_bad_etcd_member_is_refused_and_named(addr: str, tmp_path: Path) -> None:
    path = tmp_path / "manager.toml"
    path.write_text(f'[etcd]\naddr = "{addr}"\n')
    with pytest.raises(ConfigError, match=r"etcd\.addr: .*not a host:port address"):
        load_config(ManagerConfig, path)


def test_a_single_database_host_keeps_the_plain_url() -> None:
    db = DBConfig(addr="10.0.0.5", name="backend", user="bai", password="p@ss:w/rd%")
    url = make_url(db.dsn)
    assert (url.host, url.port, url.database, url.username, url.password) == (
        "10.0.0.5", 5432, "backend", "bai", "p@ss:w/rd%")
    assert "target_session_attrs" not in url.query


def test_several_database_hosts_go_to_the_writable_one() -> None:
    db = DBConfig(addr="pg1:5432, pg2", name="backend", user="bai", password="secret")
    assert db.addr == "pg1:5432,pg2:5432"
    assert db.hosts == [("pg1", 5432), ("pg2", 5432)]
    url = make_url(db.dsn)
    assert url.query["host"] == ("pg1:5432", "pg2:5432")
    assert url.query["target_session_attrs"] == "read-write"
    assert url.password == "secret" and url.database == "backend"


def test_a_bad_database_host_is_refused_and_named(tmp_path: Path) -> None:
    path = tmp_path / "manager.toml"
    path.write_text('[db]\naddr = "pg1:5432,pg2:x"\n')
    with pytest.raises(ConfigError, match=r"db\.addr: .*'pg2:x'"):
        load_config(ManagerConfig, path)


def test_redis_target_from_a_sentinel_comma_list() -> None:
    target = RedisTarget(sentinel="s1:26379, s2 ,s3:26380", password="pw")
    assert target.sentinel == ("s1:26379", "s2:26379", "s3:26380")
    assert target.service_name == DEFAULT_SERVICE_NAME
    assert "pw" not in target.describe() and "s2:26379" in target.describe()
    assert RedisTarget(addr="r1:6380").describe() == "r1:6380"


@pytest.mark.parametrize("sentinel", ["127.0.0.1:0", "127.0.0.1:x", "h1:26379,/bad"])
def test_a_bad_sentinel_is_refused_and_named(sentinel: str) -> None:
    with pytest.raises(ValueError, match="not a host:port address"):
        RedisTarget(sentinel=sentinel)


def test_a_bad_service_name_is_refused() -> None:
    with pytest.raises(ValueError, match="not a Sentinel service name"):
        RedisTarget(sentinel="s1", service_name="my master")


def test_webserver_redis_takes_sentinels_as_a_list_or_a_string(tmp_path: Path) -> None:
    path = tmp_path / "webserver.toml"
    path.write_text('[session.redis]\nsentinel = ["s1:26379", "s2"]\nservice-name = "bai"\npassword = "pw"\n')
    redis = load_config(WebserverConfig, path).session.redis
    assert redis.target == RedisTarget(addr="127.0.0.1:6379", password="pw", sentinel=("s1:26379", "s2:26379"),
                                       service_name="bai")
    assert RedisSection.model_validate({"sentinel": "s1,s2", "service_name": "x"}).target.sentinel == (
        "s1:26379", "s2:26379")
    assert RedisSection().target == RedisTarget(addr="127.0.0.1:6379")


def test_webserver_refuses_a_bad_sentinel_naming_the_key(tmp_path: Path) -> None:
    path = tmp_path / "webserver.toml"
    path.write_text('[session.redis]\nsentinel = ["s1:26379", "s2:port"]\n')
    with pytest.raises(ConfigError, match=r"session\.redis\.sentinel: .*'s2:port'"):
        load_config(WebserverConfig, path)
