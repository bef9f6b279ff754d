"""The call-log suite's PostgreSQL server, for the outage tests here."""

from tests.calllog.conftest import postgres_server_url

__all__ = ["postgres_server_url"]
