"""Runnable towpath examples (``examples.chat``, ``examples.notifications``, ``examples.jobs``,
...). Each folder's README.md says how to run it; run them from the repository root."""
