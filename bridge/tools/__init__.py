"""Tools the assistant may call during a call.

`builtin`: the bridge's own (end_call, transfer_call), which the `Call` carries out itself, and the
shape of a tool's failure as the model reads it. `webhook`: HTTP tools declared by ops in TOOLS_FILE.
`toolbox`: the configured tools by name, and how the pump runs one.
"""
