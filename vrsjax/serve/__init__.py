"""`vrsjax serve`: an OpenAI-compatible chat-completions server over a vrsjax checkpoint (`protocol` the wire format,
`engine` the model, `batcher` the request queue, `app` the HTTP server)."""

from vrsjax.serve.app import serve

__all__ = ["serve"]
