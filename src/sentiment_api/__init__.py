"""sentiment-api: train, shrink, serve, scale and watch a tweet-sentiment classifier."""

__version__ = "0.1.0"
