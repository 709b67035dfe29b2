"""One delivery of one event to one receiver, signed the Standard Webhooks way.

The body is sent exactly as the event was serialised when it was made; `webhook-id` is the
event's (the same on every retry, so receivers dedupe by it), `webhook-timestamp` the time of
this attempt (receivers refuse signatures more than five minutes old), and
`webhook-signature` is `v1,<base64 HMAC-SHA256 of id.timestamp.body>`, made by the
`standardwebhooks` package. Redirects are not followed; a receiver gets TIMEOUT seconds to
answer; its answer's body is never read, and so never logged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import requests
from standardwebhooks import Webhook

TIMEOUT = 10.0  # seconds for the connection and for the answer
USER_AGENT = "onboard-bot-webhooks/1"


@dataclass(frozen=True)
class Outcome:
    """What one attempt came to: the answer's status, or why there was none."""

    status: int | None  # None: no answer (refused, timed out, TLS failed)
    error: str = ""  # a few words for the operator: "HTTP 500", "timed out"; never a body

    @property
    def delivered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def gone(self) -> bool:
        """410 Gone: the receiver asks for no more deliveries."""
        return self.status == 410

    def __str__(self) -> str:
        return f"HTTP {self.status}" if self.status is not None else self.error


def signed_headers(secret: str, event_id: str, body: str,
                   at: datetime | None = None) -> dict[str, str]:
    """The Standard Webhooks headers of `body`, signed now (or `at`)."""
    moment = at or datetime.now(UTC)
    return {
        "webhook-id": event_id,
        "webhook-timestamp": str(int(moment.timestamp())),
        "webhook-signature": Webhook(secret).sign(event_id, moment, body),
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }


Post = Callable[..., requests.Response]


def send(url: str, secret: str, event_id: str, body: str, *,
         post: Post = requests.post) -> Outcome:
    """POST the signed `body` to `url` once; what came of it (never raises for the
    receiver's failures)."""
    headers = signed_headers(secret, event_id, body)
    try:
        response = post(url, data=body.encode(), headers=headers, timeout=TIMEOUT,
                        allow_redirects=False, stream=True)
    except requests.Timeout:
        return Outcome(None, f"no answer within {TIMEOUT:.0f} s")
    except requests.ConnectionError:
        return Outcome(None, "could not connect")
    except requests.RequestException as error:
        return Outcome(None, type(error).__name__)
    response.close()  # the body is never read
    return Outcome(response.status_code, "" if 200 <= response.status_code < 300
                   else f"HTTP {response.status_code}")
