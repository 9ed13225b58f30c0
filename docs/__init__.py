"""The reference pages, and the code that regenerates the tables in them (`docs.generate`)."""
