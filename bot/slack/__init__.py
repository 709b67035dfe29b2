"""The Slack side: the core the listeners get, Block Kit rendering, App Home, command-text
parsing, user groups, and posting reminders and DMs."""
