"""The root of spanwatch's exceptions, and the tree under it.

Every error spanwatch raises on purpose derives from :class:`SpanwatchError`, so a caller can
catch all of them, and only them, in one clause. Each adapter (receivers, store, LLM client,
alert delivery, training) translates its library's errors (``grpc.RpcError``,
``sqlite3.Error``, ``httpx.HTTPError``, ``ollama.ResponseError``) into one of these at its edge,
``raise ... from exc``. Some also derive from the built-in error they refine (``ValueError``,
``LookupError``), so code that expects those still catches them.

* :exc:`SpanwatchError`

  * :exc:`~spanwatch.config.ConfigError`: a configuration that cannot be used
  * :exc:`~spanwatch.model.InvalidRating` (also ``ValueError``): a rating that cannot be taken
    (HTTP 400)
  * :exc:`~spanwatch.model.UnknownAnalysis` (also ``LookupError``): no such analysis (404)
  * :exc:`~spanwatch.model.StorageUnavailable`: the store cannot be used now (503)

    * :exc:`~spanwatch.store.StoreError`: sqlite3's error, translated at the store's edge

  * :exc:`~spanwatch.otlp.ReceiverError`: a request answered with an error status

    * :exc:`~spanwatch.otlp.MalformedPayload`: INVALID_ARGUMENT / 400
    * :exc:`~spanwatch.otlp.PayloadTooLarge`: RESOURCE_EXHAUSTED / 413
    * :exc:`~spanwatch.otlp.Overloaded`: UNAVAILABLE / 429 or 503 with a retry delay
    * :exc:`~spanwatch.otlp.Unauthenticated`: UNAUTHENTICATED / 401
    * ``UnsupportedMediaType`` (the HTTP receiver's): 415

  * ``publish``: ``BadRequest`` (also ``ValueError``: a WebSocket message refused),
    ``SubscriberTooSlow`` (a subscriber's queue overflowed), ``DeliveryFailed`` (an alert send
    another attempt may fix), ``DeliveryRefused`` (a send the destination refused)

  * ``analyze``: ``LLMError`` (an analysis the model could not write; ``str()`` is the reason
    shown to people), with ``ModelMissing``, ``LLMRejected`` and ``Retryable`` (with
    ``LLMUnavailable``) under it; ``EvalError`` (an evaluation that cannot run as asked)
  * ``training``: ``TrainingError`` (inputs that cannot be trained on)
  * ``cli``: ``CliError`` (printed as ``spanwatch: <message>``, exit code 1)
"""

from __future__ import annotations


class SpanwatchError(Exception):
    """The root of every error spanwatch raises on purpose."""
