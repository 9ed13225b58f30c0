"""Building and operating a chat database: the Supabase stand-in (`standin`), migrations
(`migrate`, `export`), creating and rebuilding databases (`build`, `reset`), demo and load
data (`seed`), planner statistics (`stats`), the schema check (`schema`) and the abuse
limits (`limits`)."""
