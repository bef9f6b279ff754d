"""Plivo: Audio Streaming (codec), signature V3 (signature), the Call API's transfer (rest), Plivo XML
(plivo_xml), and its routes."""
