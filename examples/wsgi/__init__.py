"""A Flask (WSGI) app and a WebSocket consumer served by one towpath stack."""
