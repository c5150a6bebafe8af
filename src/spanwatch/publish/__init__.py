"""Publishing: the event hub, the WebSocket server and live page, and OTel events out."""

from ._hub import Filter, Hub, SubscriberTooSlow, Subscription
from ._otel import OtelEvents, events_enabled
from ._ratings import RatingDesk
from ._ws import WebSocketServer

__all__ = [
    "Filter",
    "Hub",
    "OtelEvents",
    "RatingDesk",
    "SubscriberTooSlow",
    "Subscription",
    "WebSocketServer",
    "events_enabled",
]
