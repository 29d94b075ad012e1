"""Smoke tests of the real Redis Cluster and Sentinel deployments in tests/redis_topology.py."""

from __future__ import annotations

from tests import redis_topology
from tests.redis_topology import RedisClusterTopology, RedisSentinelTopology, info_fields, node_command

redis_cluster = redis_topology.redis_cluster
redis_sentinel = redis_topology.redis_sentinel


def test_cluster_has_three_primaries_three_replicas_and_state_ok(redis_cluster: RedisClusterTopology) -> None:
    roles = redis_cluster.roles()
    assert len(roles["master"]) == 3 and len(roles["slave"]) == 3
    for node in redis_cluster.nodes:
        fields = info_fields(node, "cluster-info")
        assert fields["cluster_state"] == "ok" and fields["cluster_slots_ok"] == "16384"
    assert redis_cluster.url.startswith("redis+cluster://127.0.0.1:") and redis_cluster.url.count(",") == 2


def test_cluster_fail_over_key_moves_the_slot_and_the_killed_node_rejoins_as_replica(
    redis_cluster: RedisClusterTopology,
) -> None:
    key = "{sg:smoke}:meta"
    old = redis_cluster.primary_for_key(key)
    new = redis_cluster.fail_over_key(key)
    assert new is not old and redis_cluster.primary_for_key(key) is new
    assert node_command(old, "ROLE")[0] == "slave"
    assert info_fields(old, "replication")["master_port"] == str(new.port)
    assert info_fields(old, "replication")["master_link_status"] == "up"
    roles = redis_cluster.roles()
    assert len(roles["master"]) == 3 and len(roles["slave"]) == 3


def test_sentinel_fail_over_switches_the_primary_and_the_old_one_rejoins_as_replica(
    redis_sentinel: RedisSentinelTopology,
) -> None:
    old = redis_sentinel.primary()
    new = redis_sentinel.fail_over()
    assert new is not old and redis_sentinel.primary() is new
    assert node_command(new, "ROLE")[0] == "master"
    assert node_command(old, "ROLE")[0] == "slave"
    assert info_fields(old, "replication")["master_link_status"] == "up"
