"""Chat rooms over WebSockets: one channel-layer group per room, a page served by the worker.

Run it in one process on the in-memory layer (``make run``, or
``towpath runserver --routing examples.chat.routing:routes``), decoupled over Redis
(``towpath serve --settings examples/chat/settings.py`` + ``towpath runworker --settings
examples/chat/settings.py``), or decoupled over the IPC layer (``towpath serve`` +
``towpath runworker --routing examples.chat.routing:routes``). See ``examples/chat/README.md``.
"""
