"""How mail leaves: the transport protocol and its SMTP and in-memory implementations."""
