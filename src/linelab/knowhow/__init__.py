"""knowhow stage: the ledger of solved problems, recall, 8D reports."""
