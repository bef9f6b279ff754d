"""Telnyx: Media Streaming in bidirectional RTP mode (codec), Ed25519 webhook signatures (signature),
Call Control transfers (rest), TeXML answers written as TwiML, and its routes."""
