"""A browser softphone: call the bridge from a web page over the Twilio Media Streams protocol."""

from bridge.softphone.routes import setup_softphone_routes

__all__ = ["setup_softphone_routes"]
