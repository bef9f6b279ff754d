"""The call-log suite's PostgreSQL server, for the multi-replica test here."""

from tests.calllog.conftest import postgres_server_url

__all__ = ["postgres_server_url"]
