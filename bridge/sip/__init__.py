"""Direct SIP over UDP with RTP: sans-IO protocol pieces, and the asyncio edges that run them."""
