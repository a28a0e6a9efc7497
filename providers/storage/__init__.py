"""What lasts on disk under the data directory: SQLite set-up, the cost ledger, billing, the vector cache."""
