"""chat-db: the database side of a realtime 1:1 chat on Supabase, and the dbtool CLI."""

from __future__ import annotations

__version__ = "0.1.0"
