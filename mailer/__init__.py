"""The base layer: the mail ledger and outbound delivery."""
