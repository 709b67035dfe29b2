"""`python -m bot try`: the whole bot on one machine with a stand-in Slack and Exotel.

The top of the product: it imports the layers below (runtime, slack, exotel) and is imported
only by `bot.__main__` (and by testkit, whose fakes build on its stand-in Slack)."""
