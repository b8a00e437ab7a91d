"""Notifications: long-poll and Server-Sent Events answered by a publisher, with no worker in
the answer's path.

A worker only *parks* each request: it sends the response start and adds the request's reply
channel to the topic's group. A publisher (``POST /publish/<topic>``, or ``python -m
examples.notifications.publish TOPIC TEXT`` talking to the layer directly) answers every
waiting client with one ``group_send`` of an ``http.response.body`` event. See
``examples/notifications/README.md``.
"""
