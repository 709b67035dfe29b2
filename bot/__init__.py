"""onboard-bot: issue Exotel WhatsApp onboarding links from Slack."""
