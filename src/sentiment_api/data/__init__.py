"""Data: read, clean, de-duplicate and split labelled tweets (``tweets``); extra corpora (``corpora``)."""
