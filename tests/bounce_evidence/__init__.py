"""Returned mail generated here by two private Postfix instances, labelled by construction."""
