"""Replica settings: leased mode only on the PostgreSQL store, and SQLite users see no
change (no shards, no Leases)."""

from __future__ import annotations

import pytest

from mljob_operator.settings import OperatorSettings

PG = {"MLJOB_STORE_URL": "postgresql://u:p@db:5432/mljob"}


def test_sqlite_is_never_leased() -> None:
    settings = OperatorSettings.from_env({})
    assert settings.shards == 0
    assert not settings.leased


def test_sharding_on_sqlite_is_refused_naming_the_store() -> None:
    with pytest.raises(ValueError, match="MLJOB_STORE_URL"):
        OperatorSettings.from_env({"MLJOB_REPLICAS_SHARDS": "8"})


def test_postgresql_is_leased_with_16_shards_by_default() -> None:
    settings = OperatorSettings.from_env({**PG, "MLJOB_REPLICA_ID": "op-1"})
    assert settings.leased
    assert (settings.shards, settings.replica_id, settings.lease_duration_s) == (16, "op-1", 15)


@pytest.mark.parametrize("value", ["0", "off"])
def test_sharding_can_be_turned_off(value: str) -> None:
    assert not OperatorSettings.from_env({**PG, "MLJOB_REPLICAS_SHARDS": value}).leased


def test_the_advertised_address_is_the_pod_ip_and_the_listen_port() -> None:
    env = {**PG, "MLJOB_HTTP_ADDR": "0.0.0.0:8443", "MLJOB_POD_IP": "10.1.2.3"}
    assert OperatorSettings.from_env(env).advertise_addr == "10.1.2.3:8443"
    local = {**PG, "MLJOB_HTTP_ADDR": "127.0.0.1:9000"}
    assert OperatorSettings.from_env(local).advertise_addr == "127.0.0.1:9000"


def test_the_namespace_is_given_or_defaults() -> None:
    assert OperatorSettings.from_env({**PG, "MLJOB_NAMESPACE": "ops"}).namespace == "ops"


@pytest.mark.parametrize("value", ["0", "-5", "1.5", "nan", "inf", "-inf", "301", "soon"])
def test_a_lease_duration_out_of_bounds_or_not_a_number_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="MLJOB_LEASE_DURATION"):
        OperatorSettings.from_env({**PG, "MLJOB_LEASE_DURATION": value})


@pytest.mark.parametrize("value", ["3", "300", "7.5"])
def test_a_lease_duration_within_bounds_is_taken(value: str) -> None:
    env = {**PG, "MLJOB_LEASE_DURATION": value}
    assert OperatorSettings.from_env(env).lease_duration_s == float(value)


@pytest.mark.parametrize("value", ["-1", "257", "100000", "many", "1.5"])
def test_a_shard_count_out_of_bounds_or_not_a_number_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="MLJOB_REPLICAS_SHARDS"):
        OperatorSettings.from_env({**PG, "MLJOB_REPLICAS_SHARDS": value})


def test_256_shards_are_taken() -> None:
    assert OperatorSettings.from_env({**PG, "MLJOB_REPLICAS_SHARDS": "256"}).shards == 256


@pytest.mark.parametrize("value", ["pod-a.example:8443", "user@10.0.0.7:8443", "10.0.0.7"])
def test_an_advertised_address_that_is_not_a_literal_ip_and_port_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="MLJOB_ADVERTISE_ADDR"):
        OperatorSettings.from_env({**PG, "MLJOB_ADVERTISE_ADDR": value})
    assert not OperatorSettings.from_env(
        {**PG, "MLJOB_ADVERTISE_ADDR": value, "MLJOB_REPLICAS_SHARDS": "off"}
    ).leased
