"""Publishing: the event hub, the WebSocket server and live page, OTel events out, alerts."""

from ._alerts import Alerting, alerting_enabled, describe_evidence, format_value, sign, verify
from ._hub import Filter, Hub, SubscriberTooSlow, Subscription
from ._otel import OtelEvents, events_enabled
from ._ratings import RatingDesk
from ._ws import WebSocketServer

__all__ = [
    "Alerting",
    "Filter",
    "Hub",
    "OtelEvents",
    "RatingDesk",
    "SubscriberTooSlow",
    "Subscription",
    "WebSocketServer",
    "alerting_enabled",
    "describe_evidence",
    "events_enabled",
    "format_value",
    "sign",
    "verify",
]
