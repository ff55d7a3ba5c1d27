"""The sales funnel at work: the steps of :mod:`fleet.funnel` sent through the sender, the
charges made through the payments service, the follow-ups kept as durable timers and the
access delivered once a payment is paid. Shared by the handlers (a user's update), the
scheduler (timers) and the outbox (``payment.paid``)."""
