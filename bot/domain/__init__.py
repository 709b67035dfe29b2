"""The domain: batches and links, the store, quotas and Exotel's budget, access, audit,
reminder bookkeeping, link statuses and the use cases. No Slack here."""
