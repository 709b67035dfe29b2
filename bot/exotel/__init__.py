"""Exotel's ISV API: the HTTP client, its errors, the token format and the sandbox stand-in.
Knows nothing of Slack or Redis."""
