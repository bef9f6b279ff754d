"""The carriers: each one's media-stream dialect, webhooks and call control, in one shape.

Shared by every carrier: `events` (what a codec turns messages into, and commands back),
`json_message` (the checks every JSON dialect makes), `webhook` and `answer_flow` (the call webhook
answered once for all), `stream_tokens`, `public_url`, `transfer` (`TransferFailed`) and `registry`
(the list of carriers that the settings and the server read).

Each carrier is a folder `bridge/carrier/<name>/` holding:
  codec.py       the media stream's dialect, sans-IO (`decode` a message to an event, `encode` a command)
  signature.py   its webhook signature scheme (`webhook_is_signed`, `accepts_upgrade`)
  rest.py        its REST client, where it transfers calls (raises TransferFailed)
  <documents>    how its webhooks are read and its answers written: twiml.py, plivo_xml.py, ncco.py
  routes.py      `setup_routes(app, carrier)`: its parts handed to the shared answer flow
and is one entry in `registry.CARRIERS`; its caller emulator lives in bridge/sim, its tests in
tests/carriers. SignalWire and Telnyx speak TwiML dialects and reuse Twilio's parts.
"""
