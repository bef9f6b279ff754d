"""Tools the assistant may call during a call: HTTP webhooks declared by ops in TOOLS_FILE.

tools = load_tools_file(Path(settings.tools_file), os.environ)   # ToolsFileError at start-up
session.update: "tools": [tool.realtime_definition() for tool in tools]
on a function call: result = await call_webhook_tool(http, tool, arguments, context, secret)
    -> function_call_output with result.output, then response.create
"""

from bridge.tools.webhook import (
    ToolResult,
    ToolsFileError,
    WebhookTool,
    call_webhook_tool,
    load_tools_file,
    sign,
    verify_signature,
)

__all__ = [
    "ToolResult",
    "ToolsFileError",
    "WebhookTool",
    "call_webhook_tool",
    "load_tools_file",
    "sign",
    "verify_signature",
]
