"""The ledger room: what the ERP imports and what the ledger remembers about it."""
