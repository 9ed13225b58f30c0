"""The embedded PostgreSQL (`dbtool local ...`): finding the binaries (`pgbin`), running a
server in a user namespace or as nobody when root (`local`)."""
