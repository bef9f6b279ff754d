"""Twilio: Media Streams over `<Connect><Stream>` (codec), `X-Twilio-Signature` (signature), the
REST API's call update for transfers (rest), TwiML (twiml), and its routes."""
