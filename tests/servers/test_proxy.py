"""The fault proxy itself, on the Redis test server: it forwards, cuts, refuses, and swallows a
reply after the server applied the request."""

from __future__ import annotations

import pytest

from tests.servers import server_url
from tests.servers.proxy import Proxy


def _redis(url: str):  # type: ignore[no-untyped-def]
    import redis

    return redis.Redis.from_url(url, socket_timeout=3, retry_on_timeout=False, retry=None)


def test_the_proxy_forwards_and_swallows_the_reply_to_a_marked_request() -> None:
    url = server_url("redis")
    from urllib.parse import urlsplit

    port = urlsplit(url).port
    assert port is not None
    with Proxy("127.0.0.1", port) as proxy:
        client = _redis(proxy.url(url))
        client.set("tf-proxy-test", b"1")
        assert client.get("tf-proxy-test") == b"1"
        proxy.drop_reply_to(b"tf-proxy-marker")
        import redis

        with pytest.raises(redis.ConnectionError):
            client.set("tf-proxy-marker", b"applied")
        assert proxy.swallowed == 1
        direct = _redis(url)
        assert direct.get("tf-proxy-marker") == b"applied"  # the server did it
        proxy.refuse(True)
        refused = _redis(proxy.url(url))
        with pytest.raises(redis.ConnectionError):
            refused.ping()
        refused.close()
        proxy.refuse(False)
        fresh = _redis(proxy.url(url))
        assert fresh.ping()
        opened = proxy.connections
        proxy.cut()
        assert fresh.ping()  # redis-py reconnects by itself: through a new connection
        assert proxy.connections == opened + 1
        direct.delete("tf-proxy-test", "tf-proxy-marker")
        for c in (client, direct, fresh):
            c.close()
