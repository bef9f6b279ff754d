"""Vonage: the Voice API's websocket endpoint (codec), signed webhooks as JWTs (signature), NCCOs
(ncco), and its routes. No rest.py: transfers need the application's private key, which the bridge
has not."""
