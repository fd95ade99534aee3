"""The shared core every step uses: records and the model card, metrics, text and tokenisation,
devices, the engine (normalise -> tokenise -> infer -> rank), settings, errors and files."""
