"""`dbtool audit`: static findings, the effective access matrix, snapshots and drift."""
