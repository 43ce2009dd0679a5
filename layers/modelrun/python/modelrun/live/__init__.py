"""Live batch progress over the WebSocket API: the routes (``routes``: connect, subscribe, ...), the fan-out of job
changes to subscribers (``notifier``), the messages and when they are due (``messages``, pure), the connections and
subscriptions table (``connections``) and delivery through API Gateway's management API (``push``).

Delivery rules:

- a subscriber gets ``subscribed``, then at once the batch's state (``progress``, or ``completed`` if it is over);
- a job change becomes a ``progress`` message to the batch's subscribers, at most one per
  ``PROGRESS_INTERVAL_MS`` per batch unless the status or attempt changed;
- each terminal status of each attempt becomes one ``completed`` message per subscriber: a conditional write on the
  subscription decides who sends it (the subscribe path or the stream path, a first delivery or a retry), and a
  delivery that fails for now gives the claim back and asks the stream for a retry;
- a connection found gone is forgotten with all its subscriptions.
"""
