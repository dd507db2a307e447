"""The content room: which email, and its words, parts and PDF."""
