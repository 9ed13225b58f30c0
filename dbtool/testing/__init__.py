"""The pytest plugin (`dbtool.testing.plugin`, registered as the `chat_db` pytest11 entry
point): a session server, a template built like `dbtool reset`, a clone per test."""
