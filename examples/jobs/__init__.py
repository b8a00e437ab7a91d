"""Background jobs: a WebSocket page asks for "thumbnail" jobs, a separate worker pool does them
and reports progress back to the browser.

The web pool (``towpath runworker --exclude-channels thumbnail``) runs the page and the
WebSocket consumer, which sends each job to the ``thumbnail`` channel. The job pool
(``towpath runworker --only-channels thumbnail``) works in steps and sends progress to a
group the client's consumer is in. ``python -m examples.jobs.run`` starts the lot; see
``examples/jobs/README.md``.
"""
