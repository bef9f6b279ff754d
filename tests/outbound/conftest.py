"""The call-log suite's headless-Chromium fixtures (`page`, `chromium`), for the placed call's pages."""

from tests.calllog.test_browser import chromium, page  # noqa: F401 - fixtures, found here by pytest
