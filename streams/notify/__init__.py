"""Alert routing and notification: rules shaped like Prometheus Alertmanager's (``rules``), grouping, silences,
acknowledgements and resolution (``dispatch``, over a durable SQLite state: ``state``), the Alertmanager v4
webhook body with an HMAC signature and email over SMTP with STARTTLS (``payload``, ``senders``), delivery
with retries and backoff (``deliver``), customers' opt-ins to email on their own meter (``optins``), and the
alert history kept as a store table (``history``). The worker feeds it the ``alerts`` topic (``agents/notify.py``);
the console and ``meterseal alerts silence`` edit silences and acknowledgements. May import the spine
(``streams.settings``, ``streams.exceptions``), ``streams.crypto``, ``streams.store`` and ``schemas``; never the
pipeline, the console, the CLI or Faust."""
