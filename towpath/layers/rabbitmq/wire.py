"""What the RabbitMQ layer puts on the broker: names and message bodies.

Names (``P`` is the layer's ``prefix``):

* a normal channel ``c`` is the queue ``P:c``, published to through the default exchange;
* the ``!`` channels ``x.<client>!<anything>`` all live in one queue per process, ``P@<client>``
  (the *inbox*), named from the channel so every sender finds it without asking anyone (AMQP
  queue names cannot hold a ``!``; channel names cannot hold an ``@``);
* every group is a routing key on one direct exchange, ``P:groups``.

Every body is ``EXPIRY TAG SP DATA``: ``EXPIRY`` the 13-digit wall-clock time in milliseconds
after which the message is dropped unread (RabbitMQ drops it in the queue through the message's
``expiration``; the reader drops what outlived it in its local buffer), ``TAG`` empty for a
message to a normal channel or a group (or, for a group message from a process that has
members of the group itself, ``@<id>``: that process waits for its own copy, see
``core.py``), and ``DATA`` the serialised message. In an inbox ``TAG`` says what the entry
is:

* ``<channel>`` or ``<channel>,<client>``: a message for one ``!`` channel, sent by a process
  whose own inbox is ``P@<client>`` (told there when the channel is full);
* ``+<group>,<channel>`` / ``-<group>,<channel>``: another process added the channel to the group
  (``EXPIRY`` is then the end of the membership) / discarded it;
* ``#+<channel>`` / ``#-<channel>``: the owner of ``channel`` says it is full until ``EXPIRY`` /
  has room again.
"""

from __future__ import annotations

__all__ = [
    "ADD",
    "DISCARD",
    "ECHO",
    "FREE",
    "FULL",
    "NOTICE",
    "body",
    "inbox_segment",
    "stamp",
    "unstamp",
]

HEADER = 13
ADD = ord("+")
DISCARD = ord("-")
NOTICE = ord("#")
ECHO = ord("@")
FULL = b"#+"
FREE = b"#-"


def stamp(expires_at: float) -> bytes:
    """The 13-digit header: ``expires_at`` (epoch seconds) in milliseconds."""
    return b"%013d" % int(expires_at * 1000)


def unstamp(entry: bytes) -> float:
    """The expiry (epoch seconds) at the head of ``entry``."""
    return int(entry[:HEADER]) / 1000


def body(expires_at: float, tag: bytes, data: bytes) -> bytes:
    return b"%013d%b %b" % (int(expires_at * 1000), tag, data)


def inbox_segment(channel: str) -> str:
    """The part of a ``!`` channel's name that names its process: the last dot-separated
    piece before the ``!`` (the client id in ``prefix.<client>!<random>``)."""
    bang = channel.index("!")
    dot = channel.rfind(".", 0, bang)
    return channel[dot + 1 : bang]
