"""The chat app: a Channels WebSocket consumer and a view that talks to its rooms."""
