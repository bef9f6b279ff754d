"""The call-log suite's headless-Chromium fixture (`page`), for the placed call's pages."""

from tests.calllog.test_browser import page  # noqa: F401 - a fixture, found here by pytest
