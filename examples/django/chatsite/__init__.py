"""The Django project of the chat example: settings, URLs and the ASGI entry point."""
