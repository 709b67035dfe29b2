"""Signed webhooks, the Standard Webhooks way: signing and sending one delivery over HTTP.
No Slack, no Redis: the domain says what an event is, the job engine runs each delivery."""
