"""SignalWire: Twilio's dialect at SignalWire's paths. Its codec is Twilio's, its answers TwiML (cXML),
its signature Twilio's scheme with the Signing Key. No rest.py: transfers need REST credentials the
bridge has no settings for."""
